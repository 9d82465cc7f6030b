"""What a simulated model says: a tool call, JSON, a task answer (right or plausibly wrong), or a short chat reply."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from kalibr.sandbox._answers import SolvedTask
from kalibr.sandbox._dspy_format import dspy_reply, strip_markers
from kalibr.sandbox._fill import fill_schema
from kalibr.sandbox._request import ChatRequest, ToolCall, ToolSpec

__all__ = ["Reply", "compose_reply"]

_ASKS_FOR_TOOL = re.compile(r"\b(?:use|call|using|invoke|run)\b.{0,40}\b(?:tools?|functions?)\b", re.IGNORECASE)
_REPEAT = re.compile(r"\b(?:repeat|echo|say back)\b[^:\n]{0,30}:\s*(.+)", re.IGNORECASE | re.DOTALL)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_QUOTED_KEY = re.compile(r"['\"`]([A-Za-z_]\w*)['\"`]")
_GREETING = re.compile(r"^\W*(?:hello|hi|hey|good (?:morning|afternoon|evening))\b", re.IGNORECASE)
_NAME_PART = re.compile(r"[A-Z]?[a-z]+|\d+")
_GENERIC_NAME_PARTS = frozenset(
    ["get", "set", "fetch", "tool", "function", "run", "call", "do", "make", "the", "and", "for", "with"]
)


@dataclass(frozen=True, slots=True)
class Reply:
    text: str | None
    tool_calls: list[ToolCall]
    finish_reason: Literal["stop", "length", "tool_calls"] = "stop"
    stop_sequence: str | None = None

    def output_text(self) -> str:
        """What the model 'generated', for counting output tokens."""
        calls = "".join(call.name + json.dumps(call.arguments) for call in self.tool_calls)
        return (self.text or "") + calls


def compose_reply(request: ChatRequest, solved: SolvedTask | None, *, correct: bool, rng: random.Random) -> Reply:
    """The model's reply; ``correct`` decides whether a recognised task is answered right."""
    answer = None if solved is None else solved.expected if correct else solved.wrong(rng)
    tool = _tool_to_call(request)
    if tool is not None:
        arguments = fill_schema(tool.parameters or {}, request.last_user_text(), answer=answer)
        return Reply(None, [ToolCall(tool.name, arguments if isinstance(arguments, dict) else {})], "tool_calls")
    if request.json_schema is not None:
        return Reply(json.dumps(fill_schema(request.json_schema, request.last_user_text(), answer=answer)), [])
    if request.json_mode:
        return Reply(json.dumps(_json_mode_value(request, answer), ensure_ascii=False), [])
    return _truncate(_text_reply(request, answer), request)


def _json_mode_value(request: ChatRequest, answer: str | None) -> Any:
    """JSON mode names no schema: use one the prompt spells out, else the keys it quotes, else ``answer``."""
    text = request.last_user_text()
    everything = "\n".join(turn.text for turn in request.turns if turn.role in ("system", "user"))
    for candidate in _JSON_OBJECT.findall(everything):
        try:
            schema = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
            return fill_schema(schema, text, answer=answer)
    keys = list(dict.fromkeys(_QUOTED_KEY.findall(text)))
    if keys and re.search(r"\bjson\b", text, re.IGNORECASE):
        schema = {"type": "object", "properties": {key: {"type": "string"} for key in keys}}
        return fill_schema(schema, _QUOTED_KEY.sub(" ", text), answer=answer)
    return {"answer": _text_reply(request, answer)}


def _tool_to_call(request: ChatRequest) -> ToolSpec | None:
    if not request.tools or request.tool_choice == "none":
        return None
    if request.tool_choice.startswith("tool:"):
        name = request.tool_choice[len("tool:") :]
        return next(tool for tool in request.tools if tool.name == name)
    text = request.last_user_text()
    scored = [(_relevance(tool, text), index, tool) for index, tool in enumerate(request.tools)]
    best_score, _, best = max(scored, key=lambda item: (item[0], -item[1]))
    if request.tool_choice == "required":
        return best
    if _tool_result_follows_user(request):
        return None
    return best if best_score > 0 or _ASKS_FOR_TOOL.search(text) else None


def _relevance(tool: ToolSpec, text: str) -> int:
    lowered = text.lower()
    if tool.name.lower() in lowered:
        return 10
    parts = {part.lower() for part in _NAME_PART.findall(tool.name)} - _GENERIC_NAME_PARTS
    return sum(1 for part in parts if len(part) >= 3 and re.search(rf"\b{re.escape(part)}", lowered))


def _tool_result_follows_user(request: ChatRequest) -> bool:
    for turn in reversed(request.turns):
        if turn.role == "tool":
            return True
        if turn.role == "user":
            return False
    return False


def _text_reply(request: ChatRequest, answer: str | None) -> str:
    text = request.last_user_text()
    formatted = dspy_reply(text, answer)
    if formatted is not None:
        return formatted
    if answer is not None:
        return answer
    if _tool_result_follows_user(request):
        results = [turn for turn in request.turns[_last_user_index(request) + 1 :] if turn.role == "tool"]
        summary = "; ".join(turn.text.strip() for turn in results if turn.text.strip()) or "no output"
        return f"The tool returned: {summary}"
    repeat = _REPEAT.search(text)
    if repeat:
        return repeat.group(1).strip()
    if _GREETING.search(text):
        return "Hello! How can I help you today?"
    return f"Simulated reply from {request.model}: I read your message ({_snippet(text) or 'empty'})."


def _snippet(text: str) -> str:
    return " ".join(strip_markers(text).split()[:12])


def _last_user_index(request: ChatRequest) -> int:
    return max((index for index, turn in enumerate(request.turns) if turn.role == "user"), default=-1)


def _truncate(text: str, request: ChatRequest) -> Reply:
    for stop in request.stop:
        if stop and stop in text:
            return Reply(text[: text.index(stop)], [], "stop", stop)
    if request.max_tokens is not None and len(text) > request.max_tokens * 4:
        return Reply(text[: max(1, request.max_tokens * 4)], [], "length")
    return Reply(text, [], "stop")

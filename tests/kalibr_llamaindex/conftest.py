"""Fixtures for the LlamaIndex adapter: a router over the sandbox, its LLM, and recorders."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index_instrumentation import get_dispatcher
from pydantic import BaseModel, Field
from tests.recording import RecordingRouter

from kalibr_llamaindex import KalibrLLM

# LlamaIndex workflows (FunctionAgent) list an agent's members with inspect.getmembers, which touches pydantic's
# deprecated attributes (``__fields__``, ``model_computed_fields`` on the instance): warnings from their code.
AGENT_WARNINGS = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

if TYPE_CHECKING:
    from kalibr.sandbox import SandboxServer


class Person(BaseModel):
    """What the structured-output tests extract."""

    name: str
    age: int


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def sandbox_paths(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [{"model": name, "base_url": sandbox.openai_base_url} for name in ("sandbox-mini", "sandbox-base")]


@pytest.fixture
def router(sandbox: SandboxServer) -> RecordingRouter:
    return RecordingRouter("li_contract", sandbox_paths(sandbox), store="memory:")


@pytest.fixture
def llm(router: RecordingRouter) -> KalibrLLM:
    built = router.as_llamaindex()
    assert isinstance(built, KalibrLLM)
    return built


class EventRecorder(BaseEventHandler):
    """Keeps the class name of every instrumentation event."""

    names: list[str] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "KalibrTestEventRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.names.append(event.class_name())


@pytest.fixture
def events() -> Iterator[list[str]]:
    recorder = EventRecorder(names=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    yield recorder.names
    dispatcher.event_handlers.remove(recorder)


@pytest.fixture
def closes_leftover_loop() -> Iterator[None]:
    """LlamaIndex's sync query path runs coroutines on ``asyncio.get_event_loop()``, creating a loop it never
    closes; close it so the test does not leak it."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:  # no loop was left behind
            return
    loop.close()
    asyncio.set_event_loop(None)


class DecisionRecorder(BaseEventHandler):
    """Keeps the trace id of every routed LLM answer, as LlamaIndex's instrumentation reports them."""

    trace_ids: list[str] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "KalibrTestDecisionRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        response = getattr(event, "response", None)
        raw = getattr(response, "raw", None)
        if isinstance(event, LLMChatEndEvent | LLMCompletionEndEvent) and isinstance(raw, dict) and "kalibr" in raw:
            trace_id = raw["kalibr"]["trace_id"]
            if trace_id not in self.trace_ids:
                self.trace_ids.append(trace_id)


@pytest.fixture
def decisions() -> Iterator[list[str]]:
    """The trace ids of the routed LLM answers made during the test, in order."""
    recorder = DecisionRecorder(trace_ids=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    yield recorder.trace_ids
    dispatcher.event_handlers.remove(recorder)

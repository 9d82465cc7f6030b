"""Task generation, answer checking, task recognition and schema filling, without a server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kalibr._exceptions import UserError
from kalibr.sandbox._answers import solve
from kalibr.sandbox._fill import fill_schema
from kalibr.sandbox.tasks import TaskGenerator

KINDS = ["arithmetic", "extraction", "classification"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_sandbox_recognises_and_solves_every_generated_task(kind: Any) -> None:
    generator = TaskGenerator(kind=kind, seed=1)
    for _ in range(200):
        task = generator.next()
        solved = solve(task.prompt)
        assert solved is not None, task.prompt
        assert solved.kind == kind
        assert solved.expected == task.expected, task.prompt
        assert task.check(solved.expected)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_answers_fail_the_check(kind: Any) -> None:
    generator = TaskGenerator(kind=kind, seed=2)
    rng = random.Random(0)
    for _ in range(100):
        task = generator.next()
        solved = solve(task.prompt)
        assert solved is not None
        assert not task.check(solved.wrong(rng)), task.prompt


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    def prompts(seed: int) -> list[str]:
        generator = TaskGenerator(kind="extraction", seed=seed)
        return [generator.next().prompt for _ in range(10)]

    assert prompts(4) == prompts(4)
    assert prompts(4) != prompts(5)


def test_checks_tolerate_wording_around_the_answer() -> None:
    arithmetic = TaskGenerator(kind="arithmetic", seed=0).next()
    assert arithmetic.check(f"The answer is {arithmetic.expected}.")
    assert not arithmetic.check("")
    assert not arithmetic.check(None)
    extraction = TaskGenerator(kind="extraction", seed=0).next()
    assert extraction.check(f"Company: {extraction.expected.upper()}")
    classification = TaskGenerator(kind="classification", seed=0).next()
    assert classification.check(f"{classification.expected.capitalize()}.")
    assert classification.messages == [{"role": "user", "content": classification.prompt}]


def test_unknown_task_kind_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown task kind 'poetry'"):
        TaskGenerator(kind="poetry")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's 3 + 4?", "7"),
        ("Compute 2.5 * 4", "10"),
        ("What is 7 / 2?", "3.5"),
        ("Extract the company name: shares of Zeta Labs fell.", "Zeta Labs"),
        ("What is the sentiment? I love it, excellent.", "positive"),
    ],
)
def test_solve_handles_free_form_prompts(text: str, expected: str) -> None:
    solved = solve(text)
    assert solved is not None
    assert solved.expected == expected


def test_plain_chat_is_not_a_task() -> None:
    assert solve("Hello there") is None
    assert solve("What is 1 / 0?") is None


def test_fill_schema_recurses_and_keeps_required_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "number"}},
            "owner": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            "level": {"type": "integer", "minimum": 10},
            "kind": {"enum": ["alpha", "beta"]},
            "when": {"type": "string", "format": "date"},
            "flag": {"type": ["boolean", "null"]},
        },
        "required": ["items", "owner", "level", "kind", "when", "flag"],
    }
    value = fill_schema(schema, "Sum 1, 2 and 3 for Ada Lovelace, beta please")
    assert value["items"] == [1.0, 2.0, 3.0]
    assert value["owner"] == {"name": "Ada Lovelace"}
    assert value["level"] == 10
    assert value["kind"] == "beta"
    assert value["when"] == "2024-01-01"
    assert value["flag"] is True


def test_fill_schema_copies_quoted_text_verbatim_in_order() -> None:
    schema = {"type": "object", "properties": {"first": {"type": "string"}, "second": {"type": "string"}}}
    value = fill_schema(schema, 'Rename “株式会社テスト” to "Ünïcode Co" now')
    assert value == {"first": "株式会社テスト", "second": "Ünïcode Co"}


def test_fill_schema_stops_on_recursive_schemas() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "child": {"$ref": "#/$defs/Node"}},
                "required": ["label"],
            }
        },
    }
    value = fill_schema(schema, "a tree")
    depth = 0
    while "child" in value:
        value, depth = value["child"], depth + 1
    assert 0 < depth < 20
    assert "label" in value


def test_dspy_chat_adapter_prompts_get_typed_field_sections() -> None:
    from kalibr.sandbox._dspy_format import dspy_reply

    prompt = (
        "[[ ## question ## ]]\nWhat is 3 + 4?\n\n"
        "Respond with the corresponding output fields, starting with the field `[[ ## reasoning ## ]]`, then "
        "`[[ ## answer ## ]]` (must be formatted as a valid Python int), then `[[ ## sure ## ]]` (must be formatted "
        "as a valid Python bool), then `[[ ## mood ## ]]` (must be formatted as a valid Python Literal['calm', 'sad'])"
        ", and then ending with the marker for `[[ ## completed ## ]]`."
    )
    reply = dspy_reply(prompt, "7")
    assert reply == (
        "[[ ## reasoning ## ]]\nConsidering the input: What is 3 + 4?\n\n[[ ## answer ## ]]\n7\n\n"
        "[[ ## sure ## ]]\nTrue\n\n[[ ## mood ## ]]\ncalm\n\n[[ ## completed ## ]]"
    )
    assert dspy_reply("What is 3 + 4?", "7") is None

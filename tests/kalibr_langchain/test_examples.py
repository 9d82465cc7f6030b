"""The README's LangChain examples, each run a few hundred times against the sandbox: the router learns.

The sandbox's "weak-model" answers checkable tasks right a quarter of the time, "strong-model" 95% of the time;
only ``success_when`` on the chain's output tells them apart, and traffic must move to the strong model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from pydantic import BaseModel

from kalibr.sandbox import SandboxServer
from kalibr.sandbox.tasks import Task, TaskGenerator, TaskKind
from kalibr_langchain import ChatKalibr, KalibrCallbackHandler

from .conftest import sandbox_paths, share_of, stored_outcomes

RUNS = 200
LATE = 100  # the share of the strong model is measured over the last LATE runs


class _Tasks:
    """Asks RUNS checkable tasks; ``check`` judges a chain's output against the task being asked."""

    def __init__(self, kind: TaskKind, seed: int) -> None:
        self._generator = TaskGenerator(kind, seed=seed)
        self.task = self._generator.next()

    def check(self, text: str) -> bool:
        return self.task.check(text)

    def run_and_assert_learned(self, ask: Callable[[Task], tuple[str, str]]) -> None:
        """``ask(task)`` runs the example once and returns (model used, final answer text)."""
        models, successes = [], []
        for _ in range(RUNS):
            model, answer = ask(self.task)
            models.append(model)
            successes.append(self.task.check(answer))
            self.task = self._generator.next()
        assert share_of(models[-LATE:], "strong-model") >= 0.8, models
        assert sum(successes[-LATE:]) >= 0.8 * LATE


def _router_model(server: SandboxServer, goal: str) -> ChatKalibr:
    return ChatKalibr(goal=goal, paths=sandbox_paths(server, "weak-model", "strong-model"), store="memory:")


def _question_chain(llm: ChatKalibr) -> Runnable[dict[str, str], str]:
    return ChatPromptTemplate.from_messages([("user", "{question}")]) | llm | StrOutputParser()


def test_prompt_model_parser_chain_learns(learning_sandbox: SandboxServer) -> None:
    llm = _router_model(learning_sandbox, "example_chain")
    tasks = _Tasks("arithmetic", seed=1)
    handler = KalibrCallbackHandler(llm, success_when=tasks.check)
    chain = _question_chain(llm)

    def ask(task: Task) -> tuple[str, str]:
        answer = chain.invoke({"question": task.prompt}, config={"callbacks": [handler]})
        [trace_id] = handler.trace_ids_for(answer)
        return _model_of_trace(llm, trace_id), answer

    tasks.run_and_assert_learned(ask)


class Company(BaseModel):
    """The company a text is about."""

    company: str


def test_structured_output_into_a_pydantic_model_learns(learning_sandbox: SandboxServer) -> None:
    llm = _router_model(learning_sandbox, "example_structured")
    tasks = _Tasks("extraction", seed=2)
    handler = KalibrCallbackHandler(llm, success_when=lambda result: tasks.check(result["parsed"].company))
    chain = llm.with_structured_output(Company, include_raw=True)

    def ask(task: Task) -> tuple[str, str]:
        result = chain.invoke(task.prompt, config={"callbacks": [handler]})
        assert isinstance(result, dict) and isinstance(result["parsed"], Company)
        return result["raw"].response_metadata["model_name"], result["parsed"].company

    tasks.run_and_assert_learned(ask)


class _TokenCounter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        self.tokens.append(str(token))


def test_streaming_with_token_callbacks_learns(learning_sandbox: SandboxServer) -> None:
    llm = _router_model(learning_sandbox, "example_streaming")
    tasks = _Tasks("arithmetic", seed=3)
    handler = KalibrCallbackHandler(llm, success_when=tasks.check)
    chain = _question_chain(llm)

    def ask(task: Task) -> tuple[str, str]:
        counter = _TokenCounter()
        pieces = list(chain.stream({"question": task.prompt}, config={"callbacks": [handler, counter]}))
        assert "".join(counter.tokens) == "".join(pieces)
        [trace_id] = handler.last_trace_ids
        return _model_of_trace(llm, trace_id), "".join(pieces)

    tasks.run_and_assert_learned(ask)


@tool
def record_company(company: str) -> str:
    """Record the company a text is about."""
    return f"recorded {company}"


# create_react_agent warns that it moved to `langchain.agents.create_agent`; the `langchain` package is not a
# dependency here, and the prebuilt agent is what LangGraph users run today.
@pytest.mark.filterwarnings("ignore::langgraph.warnings.LangGraphDeprecatedSinceV10")
def test_langgraph_tool_calling_agent_learns(learning_sandbox: SandboxServer) -> None:
    from langgraph.prebuilt import create_react_agent

    llm = _router_model(learning_sandbox, "example_agent")
    tasks = _Tasks("extraction", seed=4)
    handler = KalibrCallbackHandler(llm, success_when=lambda state: tasks.check(state["messages"][-1].text))
    agent = create_react_agent(llm, [record_company])

    def ask(task: Task) -> tuple[str, str]:
        state = agent.invoke({"messages": [("user", task.prompt)]}, config={"callbacks": [handler]})
        first, *_, last = [message for message in state["messages"] if message.type == "ai"]
        assert [call["name"] for call in first.tool_calls] == ["record_company"]  # the loop went through the tool
        return last.response_metadata["model_name"], last.text

    tasks.run_and_assert_learned(ask)


def _model_of_trace(llm: ChatKalibr, trace_id: str) -> str:
    return stored_outcomes(llm._router)[trace_id].model or ""

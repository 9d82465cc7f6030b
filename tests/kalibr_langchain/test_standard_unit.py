"""LangChain's standard unit tests for chat models, run against ChatKalibr."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from kalibr_langchain import ChatKalibr


class TestChatKalibrUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatKalibr]:
        return ChatKalibr

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Unit tests make no call: the paths point at a closed local port.
        return {
            "goal": "standard_unit",
            "paths": [{"model": name, "base_url": "http://127.0.0.1:9/v1"} for name in ("model-a", "model-b")],
            "store": "memory:",
        }

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "model-b"

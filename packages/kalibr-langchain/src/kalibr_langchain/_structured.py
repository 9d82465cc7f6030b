"""Structured output for ``ChatKalibr``: a forced tool call or a JSON ``response_format``, then a parser."""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

import kalibr

if TYPE_CHECKING:
    from kalibr_langchain.chat_model import ChatKalibr

__all__ = ["structured_runnable"]

Method = Literal["function_calling", "json_schema", "json_mode"]
_METHODS = ("function_calling", "json_schema", "json_mode")


def structured_runnable(
    model: ChatKalibr, schema: dict[str, Any] | type, *, include_raw: bool, method: Method, strict: bool | None
) -> Runnable[LanguageModelInput, Any]:
    if method not in _METHODS:
        raise kalibr.UserError(f"unknown method {method!r} for with_structured_output: use one of {_METHODS}")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    ls_format = {"kwargs": {"method": method, "strict": strict}, "schema": _json_schema(schema)}
    llm: Runnable[LanguageModelInput, Any]
    parser: Runnable[Any, Any]
    if method == "function_calling":
        tool = convert_to_openai_tool(schema, strict=strict)
        name = tool["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, strict=strict, ls_structured_output_format=ls_format)
        parser = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        llm = model.bind(
            response_format=_response_format(schema, method, strict), ls_structured_output_format=ls_format
        )
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")


def _json_schema(schema: dict[str, Any] | type) -> dict[str, Any]:
    return convert_to_json_schema(schema)


def _response_format(schema: dict[str, Any] | type, method: Method, strict: bool | None) -> dict[str, Any]:
    if method == "json_mode":
        return {"type": "json_object"}
    function = convert_to_openai_tool(schema, strict=strict)["function"]
    json_schema: dict[str, Any] = {"name": function["name"], "schema": function.get("parameters", {})}
    if function.get("description"):
        json_schema["description"] = function["description"]
    if strict is not None:
        json_schema["strict"] = strict
    return {"type": "json_schema", "json_schema": json_schema}

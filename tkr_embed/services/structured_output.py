"""Structured outputs from the request's fields to harmony: the answer's format and the tools whose arguments
follow their schemas, each compiled once (tkr_embed.structured) and refused with a 400 naming the field when the
grammar engine cannot enforce it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tkr_embed.harmony.types import FunctionTool, ResponseFormat, ToolChoice
from tkr_embed.protocol.openai_structured import (
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    TextFormatJsonSchema,
)
from tkr_embed.services.errors import BadRequestError
from tkr_embed.structured.schema import ANY_OBJECT_SCHEMA, UnsupportedSchemaError, compile_schema

JSON_OBJECT_FORMAT_NAME = "json_object"


def answer_format(response_format: object, param: str) -> ResponseFormat | None:
    """The harmony format of a `response_format` (Chat Completions) or `text.format` (Responses, whose
    json_schema fields sit beside `type`); None for text. `param` names the field in errors."""
    if isinstance(response_format, ResponseFormatJsonObject):
        return json_format(JSON_OBJECT_FORMAT_NAME, None, None, param)
    if isinstance(response_format, ResponseFormatJsonSchema):
        spec = response_format.spec
        return json_format(spec.name, spec.json_schema, spec.description, f"{param}.json_schema.schema")
    if isinstance(response_format, TextFormatJsonSchema):
        return json_format(
            response_format.name, response_format.json_schema, response_format.description, f"{param}.schema"
        )
    return None


def json_format(name: str, schema: dict | None, description: str | None, param: str) -> ResponseFormat:
    """The answer as JSON following `schema` (None: any JSON object)."""
    try:
        compiled = compile_schema(schema if schema is not None else ANY_OBJECT_SCHEMA)
    except UnsupportedSchemaError as exc:
        raise BadRequestError(f"{param} is not supported: {exc}", param) from None
    return ResponseFormat(name, compiled.grammar, schema, description)


def constrained_tools(
    tools: list[FunctionTool] | None,
    strict: Sequence[bool],
    choice: ToolChoice | None,
    param_of: Callable[[int], str],
) -> list[FunctionTool] | None:
    """The tools with `arguments_grammar` set where the arguments must follow the parameters schema: a strict
    tool (an unsupported feature is a 400 naming `param_of(i)`), and a tool that tool_choice forces (leniently:
    keywords the grammar engine does not implement are left out, as the tool did not ask for strictness)."""
    if not tools:
        return tools
    mode = choice.mode if choice is not None else "auto"
    result = []
    for index, (tool, is_strict) in enumerate(zip(tools, strict, strict=True)):
        forced = mode == "required" or (mode == "function" and choice.function_name == tool.name)
        if not is_strict and not forced:
            result.append(tool)
            continue
        schema = tool.parameters if tool.parameters is not None else ANY_OBJECT_SCHEMA
        try:
            compiled = compile_schema(schema, lenient=not is_strict)
        except UnsupportedSchemaError as exc:
            param = param_of(index)
            raise BadRequestError(f"{param} cannot be enforced: {exc}", param) from None
        result.append(FunctionTool(tool.name, tool.description, tool.parameters, compiled.grammar))
    return result

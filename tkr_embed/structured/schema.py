"""JSON schema -> grammar text (llguidance's JSON form), checked, with a cache of compiled schemas.

Compiling and checking needs no tokenizer, so the HTTP layer does it before a request reaches the engine and a
schema the grammar engine cannot honour becomes a 400 that names the feature. Between JSON tokens at most one
space is allowed: both `{"a":1,"b":[2]}` and `{"a": 1, "b": [2]}` (what `json.dumps` writes, and what a model may
have learned) pass, while a model still cannot pad the answer forever.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import llguidance

# A JSON object of any shape (`response_format: {"type": "json_object"}`).
ANY_OBJECT_SCHEMA: dict = {"type": "object"}
_OPTIONS = {"whitespace_flexible": True, "whitespace_pattern": "[ ]?"}
_CACHE_SIZE = 512


class UnsupportedSchemaError(ValueError):
    """The schema uses something the grammar engine cannot enforce (or is no JSON schema at all)."""


@dataclass(frozen=True)
class CompiledSchema:
    """A schema as the grammar engine takes it; `grammar` travels to the engine inside the constraint."""

    grammar: str


def compile_schema(schema: object, *, lenient: bool = False) -> CompiledSchema:
    """The grammar of `schema`; raises UnsupportedSchemaError with the engine's words for what is wrong.

    lenient: keywords the engine does not implement are left out instead of refused (used for a tool call that
    tool_choice forces but whose tool did not ask for `strict`)."""
    if not isinstance(schema, dict):
        raise UnsupportedSchemaError(f"a JSON schema must be an object (got {type(schema).__name__})")
    try:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UnsupportedSchemaError(f"the schema is not plain JSON: {exc}") from None
    return _compile(key, lenient)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(schema_json: str, lenient: bool) -> CompiledSchema:
    options = {**_OPTIONS, "lenient": True} if lenient else _OPTIONS
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_json, overrides=options)
    except ValueError as exc:
        raise UnsupportedSchemaError(str(exc)) from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        raise UnsupportedSchemaError(_first_line(messages[0]) if messages else "the schema cannot be compiled")
    return CompiledSchema(grammar)


def _first_line(message: str) -> str:
    """The engine's message without its trailing state dump (a regex error keeps its caret lines)."""
    return message.strip().split("\n<state>")[0].strip()

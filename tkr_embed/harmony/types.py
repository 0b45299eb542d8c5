"""Plain request-side types of the harmony layer (no pydantic, no HTTP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tkr_embed.harmony.errors import HarmonyRenderError

__all__ = [
    "ChatMessage",
    "FunctionTool",
    "HarmonyRenderError",
    "ReasoningEffort",
    "ResponseFormat",
    "ToolCall",
    "ToolChoice",
]

ReasoningEffort = Literal["low", "medium", "high"]


@dataclass
class ToolCall:
    """One function call by the assistant; `arguments` is JSON text, exactly as the model wrote it."""

    id: str
    name: str
    arguments: str


@dataclass
class FunctionTool:
    """A function the assistant may call; `parameters` is its JSON schema."""

    name: str
    description: str | None = None
    parameters: dict | None = None
    # the grammar (tkr_embed.structured) its arguments follow when the call is strict or forced; None: free
    arguments_grammar: str | None = None


@dataclass
class ResponseFormat:
    """The final answer's format: JSON following `grammar` (tkr_embed.structured), shown to the model in the
    developer message's `# Response Formats` section as `name`, `description` and `schema` (None: any object)."""

    name: str
    grammar: str
    schema: dict | None = None
    description: str | None = None


@dataclass
class ChatMessage:
    """One chat message as the client sent it.

    role is one of "system", "developer", "user", "assistant", "tool". A "tool" message answers
    `tool_call_id`; its `name` is the function's name when known (otherwise it is resolved from the
    earlier assistant tool_calls). An assistant message may carry `reasoning` and `tool_calls`.
    """

    role: str
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class ToolChoice:
    """How the assistant must use tools: "function" names `function_name`."""

    mode: Literal["auto", "none", "required", "function"]
    function_name: str | None = None

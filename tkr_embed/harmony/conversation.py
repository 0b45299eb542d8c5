"""Chat messages (as clients send them) to harmony messages (as gpt-oss was trained on them).

The harmony system message carries only identity, reasoning effort and channels; every client
system/developer message (and `instructions`) becomes the developer message's instructions, next to
the function tools. Assistant history keeps its reasoning (analysis), tool calls (commentary to
functions.NAME) and answer (final). Analysis of turns that already ended in a final answer is dropped,
as the harmony format asks; unlike openai-harmony 0.0.8's own renderer (which drops only when the last
assistant message is final), the reasoning of the ongoing turn is kept while older turns' is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openai_harmony import (
    Author,
    DeveloperContent,
    Message,
    Role,
    SystemContent,
    ToolDescription,
)
from openai_harmony import (
    ReasoningEffort as HarmonyEffort,
)

from tkr_embed.harmony.types import ChatMessage, FunctionTool, HarmonyRenderError, ReasoningEffort, ToolChoice

# Function names travel inside message headers ("to=functions.NAME"), so they must stay plain.
FUNCTION_NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,64}")
TOOL_CALL_CONTENT_TYPE = "<|constrain|>json"

_EFFORTS: dict[str, HarmonyEffort] = {
    "low": HarmonyEffort.LOW,
    "medium": HarmonyEffort.MEDIUM,
    "high": HarmonyEffort.HIGH,
}
_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class Conversation:
    """Harmony messages ready to render, and the tools the prompt offers."""

    messages: list[Message]
    offered_tools: list[FunctionTool]


def build_conversation(
    messages: list[ChatMessage],
    reasoning_effort: ReasoningEffort,
    tools: list[FunctionTool],
    tool_choice: ToolChoice,
    instructions: str | None,
) -> Conversation:
    """Check the request and convert it; raises HarmonyRenderError naming the bad field."""
    if reasoning_effort not in _EFFORTS:
        raise HarmonyRenderError(
            f"reasoning effort must be one of low, medium, high (got {reasoning_effort!r})", "reasoning_effort"
        )
    if not messages:
        raise HarmonyRenderError("messages must contain at least one message", "messages")
    offered_tools = _offered_tools(tools, tool_choice)
    system = SystemContent.new().with_reasoning_effort(_EFFORTS[reasoning_effort])
    harmony_messages = [Message.from_role_and_content(Role.SYSTEM, system)]
    developer = _developer_message(messages, offered_tools, instructions)
    if developer is not None:
        harmony_messages.append(developer)
    call_names: dict[str, str] = {}
    for index, message in enumerate(messages):
        harmony_messages.extend(_convert(message, index, call_names))
    return Conversation(_drop_finished_analysis(harmony_messages), offered_tools)


def _offered_tools(tools: list[FunctionTool], tool_choice: ToolChoice) -> list[FunctionTool]:
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if not isinstance(tool.name, str) or not FUNCTION_NAME_PATTERN.fullmatch(tool.name):
            raise HarmonyRenderError(
                "a function name must be 1 to 64 letters, digits, underscores or dashes", f"tools[{index}].name"
            )
        if tool.name in seen:
            raise HarmonyRenderError(f"function {tool.name!r} is defined twice", f"tools[{index}].name")
        seen.add(tool.name)
    if tool_choice.mode == "auto":
        return list(tools)
    if tool_choice.mode == "none":
        return []
    if tool_choice.mode not in ("required", "function"):
        raise HarmonyRenderError(
            f"tool_choice must be auto, none, required or a function (got {tool_choice.mode!r})", "tool_choice"
        )
    if not tools:
        raise HarmonyRenderError(f"tool_choice {tool_choice.mode!r} needs at least one tool", "tool_choice")
    if tool_choice.mode == "function" and tool_choice.function_name not in seen:
        raise HarmonyRenderError(
            f"tool_choice names function {tool_choice.function_name!r}, which is not among the tools", "tool_choice"
        )
    return list(tools)


def _developer_message(
    messages: list[ChatMessage], tools: list[FunctionTool], instructions: str | None
) -> Message | None:
    parts = [instructions] if instructions else []
    parts.extend(m.content for m in messages if m.role in ("system", "developer") and m.content)
    if not parts and not tools:
        return None
    developer = DeveloperContent.new()
    if parts:
        developer = developer.with_instructions("\n\n".join(parts))
    if tools:
        descriptions = [ToolDescription.new(t.name, t.description or "", parameters=t.parameters) for t in tools]
        developer = developer.with_function_tools(descriptions)
    return Message.from_role_and_content(Role.DEVELOPER, developer)


def _convert(message: ChatMessage, index: int, call_names: dict[str, str]) -> list[Message]:
    if message.role not in _ROLES:
        raise HarmonyRenderError(
            f"role must be one of {', '.join(_ROLES)} (got {message.role!r})", f"messages[{index}].role"
        )
    if message.role in ("system", "developer"):
        return []  # already in the developer message
    if message.role == "user":
        return [Message.from_role_and_content(Role.USER, message.content or "")]
    if message.role == "tool":
        name = _tool_result_name(message, index, call_names)
        author = Author.new(Role.TOOL, f"functions.{name}")
        result = Message.from_author_and_content(author, message.content or "")
        return [result.with_channel("commentary").with_recipient("assistant")]
    return _assistant_messages(message, index, call_names)


def _assistant_messages(message: ChatMessage, index: int, call_names: dict[str, str]) -> list[Message]:
    converted: list[Message] = []
    if message.reasoning:
        converted.append(Message.from_role_and_content(Role.ASSISTANT, message.reasoning).with_channel("analysis"))
    if message.tool_calls:
        if message.content:
            # Text beside tool calls is a preamble the user saw: commentary, not a final answer.
            preamble = Message.from_role_and_content(Role.ASSISTANT, message.content)
            converted.append(preamble.with_channel("commentary"))
        for call_index, call in enumerate(message.tool_calls):
            if not isinstance(call.name, str) or not FUNCTION_NAME_PATTERN.fullmatch(call.name):
                raise HarmonyRenderError(
                    "a function name must be 1 to 64 letters, digits, underscores or dashes",
                    f"messages[{index}].tool_calls[{call_index}].function.name",
                )
            call_names[call.id] = call.name
            tool_call = Message.from_role_and_content(Role.ASSISTANT, call.arguments or "{}")
            converted.append(
                tool_call.with_channel("commentary")
                .with_recipient(f"functions.{call.name}")
                .with_content_type(TOOL_CALL_CONTENT_TYPE)
            )
    elif message.content is not None or not message.reasoning:
        converted.append(Message.from_role_and_content(Role.ASSISTANT, message.content or "").with_channel("final"))
    return converted


def _tool_result_name(message: ChatMessage, index: int, call_names: dict[str, str]) -> str:
    name = message.name or call_names.get(message.tool_call_id or "")
    if name is None and message.tool_call_id is None:
        raise HarmonyRenderError(
            "a tool message needs tool_call_id: the id of the assistant's tool call it answers (or the function's name)",
            f"messages[{index}].tool_call_id",
        )
    if name is None:
        raise HarmonyRenderError(
            f"tool message answers tool_call_id {message.tool_call_id!r}, which no earlier assistant message made",
            f"messages[{index}].tool_call_id",
        )
    if not FUNCTION_NAME_PATTERN.fullmatch(name):
        raise HarmonyRenderError(
            "a function name must be 1 to 64 letters, digits, underscores or dashes", f"messages[{index}].name"
        )
    return name


def _drop_finished_analysis(messages: list[Message]) -> list[Message]:
    """Drop analysis messages before the last final answer: those turns are complete."""
    last_final = max((i for i, m in enumerate(messages) if m.channel == "final"), default=-1)
    return [m for i, m in enumerate(messages) if i > last_final or m.channel != "analysis"]

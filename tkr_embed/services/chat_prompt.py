"""Client chat messages and tools → harmony types → a rendered prompt."""

from __future__ import annotations

from collections.abc import Sequence

from tkr_embed.harmony.render import RenderedPrompt, render_chat
from tkr_embed.harmony.types import (
    ChatMessage,
    FunctionTool,
    HarmonyRenderError,
    ResponseFormat,
    ToolCall,
    ToolChoice,
)
from tkr_embed.protocol.openai_chat import ChatCompletionRequest, ChatMessageIn, NamedToolChoice, ToolDefinition
from tkr_embed.services.errors import BadRequestError


def harmony_messages(messages: Sequence[ChatMessageIn]) -> list[ChatMessage]:
    """OpenAI messages as harmony messages; reasoning is accepted as `reasoning` or `reasoning_content`."""
    return [
        ChatMessage(
            role=message.role,
            content=message.text() if message.content is not None else None,
            reasoning=message.reasoning if message.reasoning is not None else message.reasoning_content,
            tool_calls=[
                ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in message.tool_calls or []
            ],
            tool_call_id=message.tool_call_id,
            name=message.name,
        )
        for message in messages
    ]


def harmony_tools(tools: Sequence[ToolDefinition] | None) -> list[FunctionTool] | None:
    if not tools:
        return None
    return [
        FunctionTool(
            name=tool.function.name, description=tool.function.description, parameters=tool.function.parameters
        )
        for tool in tools
    ]


def harmony_tool_choice(choice: str | NamedToolChoice | None, tools: list[FunctionTool] | None) -> ToolChoice | None:
    """Check tool_choice against the tools; `required` and a named function need tools."""
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        names = {tool.name for tool in tools or []}
        if choice.function.name not in names:
            raise BadRequestError(
                f"tool_choice names the function {choice.function.name!r}, which is not in tools", "tool_choice"
            )
        return ToolChoice(mode="function", function_name=choice.function.name)
    if choice == "required" and not tools:
        raise BadRequestError("tool_choice 'required' needs at least one tool in tools", "tool_choice")
    return ToolChoice(mode=choice)


def render(
    messages: list[ChatMessage],
    *,
    reasoning_effort: str,
    tools: list[FunctionTool] | None = None,
    tool_choice: ToolChoice | None = None,
    instructions: str | None = None,
    response_format: ResponseFormat | None = None,
) -> RenderedPrompt:
    """Render a harmony prompt; a message the renderer refuses becomes a 400 naming the field."""
    try:
        return render_chat(
            messages,
            reasoning_effort=reasoning_effort,
            tools=tools,
            tool_choice=tool_choice,
            instructions=instructions,
            response_format=response_format,
        )
    except HarmonyRenderError as exc:
        raise BadRequestError(exc.message, exc.param) from None


def render_request(request: ChatCompletionRequest, default_reasoning_effort: str = "medium") -> RenderedPrompt:
    """A chat request's prompt as the server renders one that asks for no response format or strict tools (the demo
    model's training corpus and its tests render their dialogues so)."""
    tools = harmony_tools(request.tools)
    return render(
        harmony_messages(request.messages),
        reasoning_effort=request.reasoning_effort or default_reasoning_effort,
        tools=tools,
        tool_choice=harmony_tool_choice(request.tool_choice, tools),
    )

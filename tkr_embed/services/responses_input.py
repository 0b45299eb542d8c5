"""/v1/responses input → harmony: input items as chat messages, tools and tool choice, unsupported fields."""

from __future__ import annotations

from collections.abc import Sequence

from tkr_embed.harmony.conversation import FUNCTION_NAME_PATTERN
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ToolCall, ToolChoice
from tkr_embed.protocol.openai_responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolChoice,
    InputItem,
    MessageItem,
    ReasoningItemIn,
    ResponsesRequest,
)
from tkr_embed.services.errors import BadRequestError


def chat_messages(items: str | Sequence[InputItem], history: Sequence[InputItem] = ()) -> list[ChatMessage]:
    """Input items as harmony chat messages, after the `history` they continue (a stored response's). Consecutive
    assistant items (reasoning, a message, function calls) form one assistant turn; a function_call_output must
    answer an earlier call."""
    if isinstance(items, str):
        items = [MessageItem(role="user", content=items)]
    if not items:
        raise BadRequestError("input must hold at least one item", "input")
    messages: list[ChatMessage] = []
    turn: ChatMessage | None = None  # the assistant turn being gathered
    call_names: dict[str, str] = {}
    numbered = [*((None, item) for item in history), *enumerate(items)]
    for index, item in numbered:
        if isinstance(item, ReasoningItemIn):
            if turn is None or turn.content is not None or turn.tool_calls:
                turn = _new_turn(messages)
            turn.reasoning = (turn.reasoning or "") + item.text()
        elif isinstance(item, FunctionCallItem):
            if not FUNCTION_NAME_PATTERN.fullmatch(item.name):
                raise BadRequestError(
                    "a function name must be 1 to 64 letters, digits, underscores or dashes", _param(index, "name")
                )
            turn = turn or _new_turn(messages)
            turn.tool_calls.append(ToolCall(id=item.call_id, name=item.name, arguments=item.arguments))
            call_names[item.call_id] = item.name
        elif isinstance(item, MessageItem) and item.role == "assistant":
            if turn is None or turn.content is not None or turn.tool_calls:
                turn = _new_turn(messages)
            turn.content = item.text()
        elif isinstance(item, FunctionCallOutputItem):
            turn = None
            if item.call_id not in call_names:
                raise BadRequestError(
                    f"function_call_output answers call_id {item.call_id!r}, which no earlier function_call "
                    "item made (send the function_call items back in input, or continue the response that made "
                    "the call with previous_response_id)",
                    _param(index, "call_id"),
                )
            messages.append(
                ChatMessage(role="tool", content=item.text(), tool_call_id=item.call_id, name=call_names[item.call_id])
            )
        else:
            turn = None
            messages.append(ChatMessage(role=item.role, content=item.text()))
    return messages


def _param(index: int | None, name: str) -> str:
    """The field an error names: an input item's, or previous_response_id for an item of the history."""
    return "previous_response_id" if index is None else f"input[{index}].{name}"


def _new_turn(messages: list[ChatMessage]) -> ChatMessage:
    turn = ChatMessage(role="assistant")
    messages.append(turn)
    return turn


def harmony_tools(request: ResponsesRequest) -> tuple[list[FunctionTool] | None, ToolChoice | None]:
    tools = [FunctionTool(t.name, t.description, t.parameters) for t in request.tools or []] or None
    choice = request.tool_choice
    if choice is None:
        return tools, None
    names = {tool.name for tool in tools or []}
    if isinstance(choice, FunctionToolChoice):
        if choice.name not in names:
            raise BadRequestError(
                f"tool_choice names the function {choice.name!r}, which is not in tools", "tool_choice"
            )
        return tools, ToolChoice(mode="function", function_name=choice.name)
    if choice == "required" and not tools:
        raise BadRequestError("tool_choice 'required' needs at least one tool in tools", "tool_choice")
    return tools, ToolChoice(mode=choice)


def check_stateless(request: ResponsesRequest) -> None:
    if request.background:
        raise BadRequestError("background=true is not supported", "background")

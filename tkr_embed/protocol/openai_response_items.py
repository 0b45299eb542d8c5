"""Wire types of the stored-response routes: GET /v1/responses/{id}/input_items (a list of items with ids) and
DELETE /v1/responses/{id} (the deletion object). The response object itself is `openai_responses.Response`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Tag

from tkr_embed.protocol.openai_responses import FunctionCallOutput, ItemStatus, MessageOutput, ReasoningOutput


class InputTextContent(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class InputMessage(BaseModel):
    """A user, system or developer message of a request's input."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer"]
    content: list[InputTextContent]
    status: ItemStatus = "completed"


class FunctionCallResult(BaseModel):
    """A function's result that the client sent (a `function_call_output` input item)."""

    id: str
    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str
    status: ItemStatus = "completed"


def _item_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    if kind == "message":
        return "assistant-message" if role == "assistant" else "input-message"
    return kind if isinstance(kind, str) else None


# An input item as stored and listed: assistant messages, calls and reasoning sent back as history keep the
# shapes of output items.
StoredItem = Annotated[
    Annotated[InputMessage, Tag("input-message")]
    | Annotated[MessageOutput, Tag("assistant-message")]
    | Annotated[FunctionCallOutput, Tag("function_call")]
    | Annotated[FunctionCallResult, Tag("function_call_output")]
    | Annotated[ReasoningOutput, Tag("reasoning")],
    Discriminator(_item_kind),
]


class ResponseItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StoredItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True

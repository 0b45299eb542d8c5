"""The typed stream events of POST /v1/responses (each sent as `event: <type>` then `data: <json>`).

Every field is written, null ones included: the Open Responses schema requires keys such as
`response.completed_at` or `error.param` even when they hold null.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from tkr_embed.protocol.openai_chat import TokenLogprobOut
from tkr_embed.protocol.openai_responses import OutputItem, OutputText, ReasoningText, Response


class StreamEvent(BaseModel):
    type: str
    sequence_number: int


class ResponseLifecycleEvent(StreamEvent):
    type: Literal[
        "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed"
    ]
    response: Response


class OutputItemEvent(StreamEvent):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class ContentPartEvent(StreamEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: Annotated[OutputText | ReasoningText, Field(discriminator="type")]


class OutputTextDeltaEvent(StreamEvent):
    """`logprobs`: those of the tokens that wrote this delta (empty unless the request asked for logprobs)."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[TokenLogprobOut] = Field(default_factory=list)


class OutputTextDoneEvent(StreamEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[TokenLogprobOut] = Field(default_factory=list)


class ReasoningTextDeltaEvent(StreamEvent):
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDoneEvent(StreamEvent):
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str


class FunctionCallArgumentsDeltaEvent(StreamEvent):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(StreamEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    output_index: int
    name: str
    arguments: str


class StreamErrorDetail(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None


class ErrorEvent(StreamEvent):
    """An error after the stream started (the HTTP status was already sent). The fields are written both flat
    (OpenAI's shape, which the openai SDK reads) and under `error` (the Open Responses shape)."""

    type: Literal["error"] = "error"
    code: str | None = None
    message: str
    param: str | None = None
    error: StreamErrorDetail

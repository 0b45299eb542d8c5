"""Wire types of POST /v1/responses: the request, its input items and the response object (the
stream events are in `openai_responses_events`).

Union branches are tagged with names holding a dash ("item-message") so that a validation error
names the field the client wrote (`input[2].call_id`), never a branch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator

from tkr_embed.engine.sampling_params import MAX_TOP_LOGPROBS
from tkr_embed.protocol.limits import check_item_count, request_limits
from tkr_embed.protocol.openai_chat import TokenLogprobOut
from tkr_embed.protocol.openai_common import OpenAIRequest, medium_verbosity_only
from tkr_embed.protocol.openai_structured import ResponseFormatText, TextFormat

ReasoningEffort = Literal["low", "medium", "high"]
ReasoningSummary = Literal["auto", "concise", "detailed"]
Truncation = Literal["auto", "disabled"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["in_progress", "completed", "incomplete", "cancelled", "failed"]


def _text_or_list(value: Any) -> str:
    return "as-text" if isinstance(value, str) else "as-list"


def _by_type(prefix: str, default: str | None = None):
    def discriminate(value: Any) -> str | None:
        kind = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)
        return f"{prefix}-{kind}" if isinstance(kind, str) else None

    return discriminate


# -- input ----------------------------------------------------------------------------------------


class InputTextPart(OpenAIRequest):
    type: Literal["input_text"]
    text: str


class OutputTextPart(OpenAIRequest):
    """Assistant text sent back as history (annotations and logprobs are ignored)."""

    type: Literal["output_text"]
    text: str


ContentPart = Annotated[
    Annotated[InputTextPart, Tag("part-input_text")] | Annotated[OutputTextPart, Tag("part-output_text")],
    Discriminator(
        _by_type("part"),
        custom_error_type="invalid_content_part",
        custom_error_message="a content part must be of type input_text or output_text (text only)",
    ),
]
MessageContent = Annotated[
    Annotated[str, Tag("as-text")] | Annotated[list[ContentPart], Tag("as-list")],
    Discriminator(_text_or_list),
]


class MessageItem(OpenAIRequest):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: MessageContent

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCallItem(OpenAIRequest):
    """A call the assistant made earlier (as returned in `output`)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str = ""


class FunctionCallOutputItem(OpenAIRequest):
    """The client's result of a function call, answering `call_id`."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Annotated[
        Annotated[str, Tag("as-text")] | Annotated[list[InputTextPart], Tag("as-list")],
        Discriminator(_text_or_list),
    ]

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


class ReasoningTextIn(OpenAIRequest):
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningItemIn(OpenAIRequest):
    """Reasoning returned by an earlier response, accepted back: its content (else its summary)."""

    type: Literal["reasoning"]
    summary: list[ReasoningTextIn] = Field(default_factory=list)
    content: list[ReasoningTextIn] | None = None

    def text(self) -> str:
        parts = self.content if self.content else self.summary
        return "".join(part.text for part in parts)


InputItem = Annotated[
    Annotated[MessageItem, Tag("item-message")]
    | Annotated[FunctionCallItem, Tag("item-function_call")]
    | Annotated[FunctionCallOutputItem, Tag("item-function_call_output")]
    | Annotated[ReasoningItemIn, Tag("item-reasoning")],
    Discriminator(
        _by_type("item", default="message"),
        custom_error_type="invalid_input_item",
        custom_error_message="an input item must be of type message, function_call, function_call_output or "
        "reasoning (items cannot be referenced by id: send the item itself, or continue with previous_response_id)",
    ),
]
ResponseInput = Annotated[
    Annotated[str, Tag("as-text")] | Annotated[list[InputItem], Tag("as-list")],
    Discriminator(_text_or_list),
]


class FunctionTool(OpenAIRequest):
    """A function the model may call (the Responses API's flat tool shape)."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionToolChoice(OpenAIRequest):
    type: Literal["function"]
    name: str


class ReasoningConfig(OpenAIRequest):
    effort: ReasoningEffort | None = None
    summary: ReasoningSummary | None = None  # accepted and echoed; gpt-oss writes no summaries


class TextConfig(OpenAIRequest):
    format: TextFormat = Field(default_factory=lambda: ResponseFormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = Field(None, exclude_if=lambda value: value is None)

    @field_validator("verbosity")
    @classmethod
    def _default_verbosity(cls, value: str | None) -> str | None:
        return medium_verbosity_only(value)


class ResponsesRequest(OpenAIRequest):
    # every field of OpenAI's request is declared; any other is a 400 naming it (docs/API.md)
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    input: ResponseInput
    instructions: str | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # Logprobs come with the output text when `include` names "message.output_text.logprobs" or top_logprobs > 0.
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = None
    seed: int | None = None  # an extension, as on /v1/chat/completions: a sampled response made reproducible
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | FunctionToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # gpt-oss ends its turn at its first call, so a response holds at most one call: any limit >= 1 holds.
    max_tool_calls: int | None = Field(None, ge=1)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    metadata: dict[str, str] | None = None
    text: TextConfig | None = None
    truncation: Truncation | None = None
    service_tier: Literal["auto", "default", "flex", "priority"] | None = None  # one tier here: "default"
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None  # prefix caching is automatic; the key is echoed
    user: str | None = None

    @field_validator("input", "tools", mode="before")
    @classmethod
    def _bounded_count(cls, value: Any, info: ValidationInfo) -> Any:
        what = "input items" if info.field_name == "input" else "tools"
        return check_item_count(value, request_limits().max_input_items, what, "server.max_input_items")


# -- output ---------------------------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[TokenLogprobOut] = Field(default_factory=list)  # filled when the request asked for them


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str = ""


class SummaryText(BaseModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningOutput(BaseModel):
    """The analysis channel: chain of thought, never part of the answer."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)
    status: ItemStatus = "in_progress"


class MessageOutput(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)
    status: ItemStatus = "in_progress"


class FunctionCallOutput(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str = ""
    status: ItemStatus = "in_progress"


OutputItem = Annotated[ReasoningOutput | MessageOutput | FunctionCallOutput, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    """Why a response is incomplete: its token budget ran out, or the server stopped it (at shutdown)."""

    reason: Literal["max_output_tokens", "interrupted"]


class ResponseError(BaseModel):
    """Why a response failed (status "failed")."""

    code: str
    message: str


class ReasoningEcho(BaseModel):
    effort: ReasoningEffort
    summary: ReasoningSummary | None = None


class Response(BaseModel):
    """The response object, alike in the JSON answer and in every streamed `response.*` event. It holds every
    field the OpenAI and Open Responses schemas name (null where nothing applies) and echoes the request's
    settings as they were applied."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None  # set once the status is "completed"
    status: ResponseStatus
    incomplete_details: IncompleteDetails | None = None
    model: str
    previous_response_id: str | None = None
    instructions: str | None = None
    output: list[OutputItem] = Field(default_factory=list)
    error: ResponseError | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | FunctionToolChoice = "auto"
    truncation: Truncation = "disabled"
    parallel_tool_calls: bool = True
    text: TextConfig = Field(default_factory=TextConfig)
    top_p: float
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    temperature: float
    reasoning: ReasoningEcho
    user: str | None = None
    usage: ResponseUsage | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    store: bool = False  # whether this response was stored (GET /v1/responses/{id} answers it)
    background: bool = False
    service_tier: Literal["default"] = "default"
    metadata: dict[str, str] = Field(default_factory=dict)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

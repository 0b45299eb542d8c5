"""Wire types of POST /v1/chat/completions (request, response, stream chunks)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from tkr_embed.protocol.limits import check_item_count, request_limits
from tkr_embed.protocol.openai_common import (
    OpenAIRequest,
    SamplingRequest,
    Usage,
    medium_verbosity_only,
    not_honoured,
)
from tkr_embed.protocol.openai_structured import ResponseFormat

Role = Literal["system", "developer", "user", "assistant", "tool"]
ReasoningEffort = Literal["low", "medium", "high"]


class TextContentPart(OpenAIRequest):
    type: Literal["text"]
    text: str


class FunctionCallIn(OpenAIRequest):
    name: str
    arguments: str = ""


class ToolCallIn(OpenAIRequest):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(OpenAIRequest):
    role: Role
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None  # our name for the analysis channel ...
    reasoning_content: str | None = None  # ... and the one some clients send back

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(OpenAIRequest):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # true: the arguments follow `parameters` (a grammar holds them to it)


class ToolDefinition(OpenAIRequest):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(OpenAIRequest):
    name: str


class NamedToolChoice(OpenAIRequest):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    reasoning_effort: ReasoningEffort | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    # gpt-oss ends its turn at each call (<|call|> stops the response), so there is never more than one call:
    # false is always honoured, and true allows what the model does.
    parallel_tool_calls: bool | None = None
    # accepted, no effect on the answer
    prompt_cache_key: str | None = None  # the prefix cache is automatic
    safety_identifier: str | None = None
    store: bool | None = None
    # refused unless absent or neutral: honouring them would change the answer, and we cannot
    prediction: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None

    @field_validator("store")
    @classmethod
    def _not_stored(cls, value: bool | None) -> bool | None:
        if value:
            raise not_honoured("chat completions are not stored here; leave store out or send false")
        return value

    @field_validator("prediction", "audio", "web_search_options")
    @classmethod
    def _unsupported_option(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise not_honoured(f"{info.field_name} is not supported by this server; leave it out")
        return value

    @field_validator("functions", "function_call")
    @classmethod
    def _legacy_functions(cls, value: Any) -> Any:
        if value is not None:
            raise not_honoured("the legacy functions API is not supported; use tools and tool_choice")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and set(value) - {"text"}:
            raise not_honoured('only the "text" modality is supported')
        return value

    @field_validator("verbosity")
    @classmethod
    def _default_verbosity(cls, value: str | None) -> str | None:
        return medium_verbosity_only(value)

    @field_validator("messages", "tools", mode="before")
    @classmethod
    def _bounded_count(cls, value: Any, info: ValidationInfo) -> Any:
        return check_item_count(value, request_limits().max_input_items, info.field_name, "server.max_input_items")


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDeltaOut(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None

"""Wire types of POST /v1/completions (raw text in, raw text out; no harmony)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, field_validator

from tkr_embed.protocol.limits import check_item_count, request_limits
from tkr_embed.protocol.openai_common import SamplingRequest, Usage, not_honoured


class CompletionRequest(SamplingRequest):
    # One prompt (text or token ids) or a list of them; each gets n choices, numbered prompt-major.
    prompt: str | list[StrictInt] | list[str] | list[list[StrictInt]] = Field(union_mode="left_to_right")
    # 0 (with echo) scores the prompt without generating; without echo it is refused by the service.
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    # Extension (as vLLM's): run to max_tokens whatever tokens come; load tests use it for a fixed length.
    ignore_eos: bool = False
    # refused unless neutral: honouring them would change the answer, and we cannot
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise not_honoured("best_of above 1 is not supported; ask for n completions instead")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise not_honoured("text after the insertion point (suffix) is not supported")
        return value

    @field_validator("prompt", mode="before")
    @classmethod
    def _bounded_count(cls, value: Any) -> Any:
        # A list of texts or of token-id lists is several prompts (a flat list of ids is one).
        if isinstance(value, list) and value and isinstance(value[0], (str, list)):
            return check_item_count(value, request_limits().max_prompts, "prompts", "server.max_prompts")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list: a string or a flat list of ids is one prompt."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):  # validated: a flat list holds ids only
            return [list(self.prompt)]
        return list(self.prompt)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None

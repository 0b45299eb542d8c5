"""Wire types shared by the OpenAI endpoints: usage, models, stream options."""

from __future__ import annotations

from typing import Literal

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from tkr_embed.protocol.text_checks import refuse_lone_surrogates


class OpenAIRequest(BaseModel):
    # Clients (the SDK included) send fields we do not use; they are ignored, never a 500.
    # NaN and Infinity (which Python's JSON parser accepts) are refused as "not a finite number".
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        return refuse_lone_surrogates(value)


class StreamOptions(OpenAIRequest):
    include_usage: bool = False


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tkr-embed"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

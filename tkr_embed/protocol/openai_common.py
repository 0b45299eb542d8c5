"""Wire types shared by the OpenAI endpoints: usage, models, stream options."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from tkr_embed.engine.constraints import TokenConstraint
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.protocol.text_checks import CheckedRequest


class OpenAIRequest(CheckedRequest):
    # Clients (the SDK included) send fields we do not use; they are ignored, never a 500.
    model_config = ConfigDict(extra="ignore")


class StreamOptions(OpenAIRequest):
    include_usage: bool = False


def not_honoured(reason: str) -> PydanticCustomError:
    """A field we would have to ignore: a 400 naming it (the handler prefixes the field's name)."""
    return PydanticCustomError("not_honoured", reason)


def medium_verbosity_only(value: str | None) -> str | None:
    """`verbosity` (chat, and the Responses API's `text`): gpt-oss has one, so only its own value passes."""
    if value not in (None, "medium"):
        raise not_honoured("gpt-oss has no verbosity setting; leave it out or send medium")
    return value


class SamplingRequest(OpenAIRequest):
    """The fields /v1/completions and /v1/chat/completions share, and their conversion to engine parameters.

    No field is dropped in silence: every field of OpenAI's request is declared, those that would change the
    answer are honoured or refused unless neutral, the harmless ones (user, metadata, service_tier,
    prompt_cache_key, safety_identifier) are accepted, and a field OpenAI does not have is a 400 (a typo must
    not pass for a setting). docs/API.md lists which is which.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1, le=1_000_000)  # 0 or -1: off
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value and not all(key.isdigit() for key in value):
            raise not_honoured("logit_bias maps token ids (decimal strings, as the tokenizer numbers them) to biases")
        return value

    @property
    def logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        """`logit_bias` as the engine takes it: (token id, bias), by id."""
        return tuple(sorted((int(key), float(bias)) for key, bias in (self.logit_bias or {}).items()))

    @property
    def include_usage(self) -> bool:
        """A stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(
        self,
        max_tokens: int | None,
        logprobs: int | None,
        stop: list[str] | None = None,
        stop_token_ids: list[int] | None = None,
        constraint: TokenConstraint | None = None,
    ) -> SamplingParams:
        """The engine parameters; `stop` strings only where the engine matches them (not under harmony);
        `constraint` from the rendered prompt (tool_choice)."""
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            logprobs=logprobs,
            stop=list(stop or []),
            stop_token_ids=list(stop_token_ids or []),
            constraint=constraint,
            logit_bias=self.logit_bias_pairs,
        )


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

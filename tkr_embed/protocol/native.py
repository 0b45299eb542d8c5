"""Wire types of the original API: /generate, /chat, /stream, /health, /info."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tkr_embed.protocol.text_checks import refuse_lone_surrogates

ReasoningLevel = Literal["low", "medium", "high"]


class NativeRequest(BaseModel):
    # Unknown fields are refused by name; NaN and Infinity are refused as "not a finite number".
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        return refuse_lone_surrogates(value)


class GenerateRequest(NativeRequest):
    text: str = Field(min_length=1)
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    reasoning_level: ReasoningLevel = "medium"
    seed: int | None = None


class NativeMessage(NativeRequest):
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    reasoning: str | None = None


class ChatRequest(NativeRequest):
    messages: list[NativeMessage] = Field(min_length=1)
    system_prompt: str | None = None
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    reasoning_level: ReasoningLevel = "medium"
    seed: int | None = None


class GenerationUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    text: str                       # the final answer only
    reasoning: str                  # the analysis channel, never mixed into text
    finish_reason: str
    tokens_generated: int
    reasoning_level: ReasoningLevel
    model: str
    processing_time: float          # seconds
    usage: GenerationUsage


class StreamDelta(BaseModel):
    delta: str                      # final-answer text only ("" while the model reasons)
    finish_reason: str | None
    tokens_generated: int
    # Analysis-channel text of this update; the key is left out of answer-only events, so those keep
    # exactly the original spec's shape.
    reasoning: str | None = Field(default=None, exclude_if=lambda value: value is None)


class StreamEvent(BaseModel):
    chunk: StreamDelta
    reasoning_level: ReasoningLevel
    model: str


class MemoryInfo(BaseModel):
    rss_bytes: int
    kv_cache_blocks_total: int
    kv_cache_blocks_used: int
    kv_cache_usage: float


class HealthResponse(BaseModel):
    status: Literal["healthy", "starting", "unhealthy"]
    model_loaded: bool
    uptime: float                   # seconds since the server started
    memory: MemoryInfo | None
    active_requests: int
    waiting_requests: int


class InfoResponse(BaseModel):
    model: str
    model_path: str | None
    demo_model: bool                # True: the tiny random-weight demo checkpoint, not a real model
    context_length: int
    vocab_size: int
    quantization: str
    quantization_reason: str | None = None   # what the quantization setting chose, and why
    device: str
    dtype: str
    capabilities: list[str]
    reasoning_levels: list[ReasoningLevel] = ["low", "medium", "high"]
    version: str

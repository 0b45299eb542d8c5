"""Wire types of the original API: /generate, /chat, /stream, /health, /info."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tkr_embed.engine.constraints import TokenConstraint
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.protocol.limits import check_item_count, request_limits
from tkr_embed.protocol.text_checks import CheckedRequest

ReasoningLevel = Literal["low", "medium", "high"]


class NativeRequest(CheckedRequest):
    # Unknown fields are refused by name.
    model_config = ConfigDict(extra="forbid")


class NativeGenerationRequest(NativeRequest):
    """What /generate and /chat (and /stream, which takes either) share: sampling and reasoning."""

    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    reasoning_level: ReasoningLevel = "medium"
    seed: int | None = None
    # the answer (`text`) is JSON that follows this schema; the reasoning stays free
    json_schema: dict[str, Any] | None = None

    def sampling_params(
        self, max_tokens: int | None, stop_token_ids: list[int], constraint: TokenConstraint | None = None
    ) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop_token_ids=list(stop_token_ids),
            constraint=constraint,
        )


class GenerateRequest(NativeGenerationRequest):
    text: str = Field(min_length=1)


class NativeMessage(NativeRequest):
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    reasoning: str | None = None


class ChatRequest(NativeGenerationRequest):
    messages: list[NativeMessage] = Field(min_length=1)
    system_prompt: str | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _bounded_count(cls, value: Any) -> Any:
        return check_item_count(value, request_limits().max_input_items, "messages", "server.max_input_items")


class GenerationUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    text: str  # the final answer only
    reasoning: str  # the analysis channel, never mixed into text
    finish_reason: str
    tokens_generated: int
    reasoning_level: ReasoningLevel
    model: str
    processing_time: float  # seconds
    usage: GenerationUsage


class StreamDelta(BaseModel):
    delta: str  # final-answer text only ("" while the model reasons)
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
    # healthy (200); starting, draining, engine_dead, restarting (503)
    status: Literal["healthy", "starting", "draining", "engine_dead", "restarting", "unhealthy"]
    model_loaded: bool
    uptime: float  # seconds since the server started
    memory: MemoryInfo | None
    active_requests: int
    waiting_requests: int


class InfoResponse(BaseModel):
    model: str
    model_path: str | None
    demo_model: bool  # True: the tiny trained demo model (no model configured), not a real one
    demo_model_skills: list[str] | None = None  # what the demo model was trained to do (demo_model only)
    context_length: int
    vocab_size: int
    quantization: str
    quantization_reason: str | None = None  # what the quantization setting chose, and why
    device: str
    dtype: str
    capabilities: list[str]
    reasoning_levels: list[ReasoningLevel] = ["low", "medium", "high"]
    version: str

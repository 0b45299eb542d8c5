"""The original API: /generate, /chat, /stream over harmony (answer and reasoning kept apart)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.render import RenderedPrompt
from tkr_embed.harmony.types import ChatMessage
from tkr_embed.protocol.native import (
    ChatRequest,
    GenerateRequest,
    GenerateResponse,
    GenerationUsage,
    StreamDelta,
    StreamEvent,
)
from tkr_embed.services.accounting import RequestCost, note_reasoning_tokens, reasoning_token_cap
from tkr_embed.services.admission import chat_chars, check_prompt_chars, check_prompt_tokens, default_max_tokens_cap
from tkr_embed.services.chat_prompt import render
from tkr_embed.services.context import ModelContext, new_request_id
from tkr_embed.services.engine_stream import EngineStream
from tkr_embed.services.harmony_decode import HarmonyDecoder
from tkr_embed.services.response_caching import CacheSlot, cache_slot, cached_or_created, cached_or_streamed
from tkr_embed.services.structured_output import json_format

NATIVE_FORMAT_NAME = "answer"  # the name the developer message gives a `json_schema` format


@dataclass
class PreparedNative:
    request_id: str
    rendered: RenderedPrompt
    params: SamplingParams
    reasoning_level: str

    @property
    def cost(self) -> RequestCost:
        return RequestCost(1, len(self.rendered.token_ids), self.params.max_tokens or 0)


class NativeService:
    def __init__(self, ctx: ModelContext) -> None:
        self.ctx = ctx

    def prepare(self, request: GenerateRequest | ChatRequest) -> PreparedNative:
        """Checks, renders and tokenizes: call it through `ctx.off_loop`."""
        if isinstance(request, GenerateRequest):
            messages = [ChatMessage(role="user", content=request.text)]
            prompt_param = "text"
        else:
            messages = [ChatMessage(role="system", content=request.system_prompt)] if request.system_prompt else []
            messages += [ChatMessage(role=m.role, content=m.content, reasoning=m.reasoning) for m in request.messages]
            prompt_param = "messages"
        check_prompt_chars(chat_chars(messages), prompt_param)
        answer_format = None
        if request.json_schema is not None:
            answer_format = json_format(NATIVE_FORMAT_NAME, request.json_schema, None, "json_schema")
        rendered = render(messages, reasoning_effort=request.reasoning_level, response_format=answer_format)
        num_prompt = len(rendered.token_ids)
        check_prompt_tokens(num_prompt, prompt_param)
        cap = default_max_tokens_cap([num_prompt], 1, request.max_tokens, "max_tokens", prompt_param)
        max_tokens = self.ctx.max_tokens_for(num_prompt, request.max_tokens, "max_tokens", prompt_param, cap)
        params = request.sampling_params(
            max_tokens, list(rendered.stop_token_ids), rendered.constraint_for(max_tokens, reasoning_token_cap())
        )
        return PreparedNative(new_request_id("gen"), rendered, params, request.reasoning_level)

    def _cache_slot(self, prepared: PreparedNative, endpoint: str, stream: bool) -> CacheSlot | None:
        return cache_slot(
            endpoint=endpoint,
            model=self.ctx.model_id,
            prompt_token_ids=prepared.rendered.token_ids,
            params=prepared.params,
            stream=stream,
            extra={"reasoning_level": prepared.reasoning_level},
        )

    async def generate(self, request: GenerateRequest | ChatRequest) -> GenerateResponse:
        started = time.perf_counter()
        prepared = await self.ctx.off_loop(self.prepare, request)
        endpoint = "/generate" if isinstance(request, GenerateRequest) else "/chat"
        return await cached_or_created(
            self._cache_slot(prepared, endpoint, stream=False), lambda: self._generate(prepared, started), prepared.cost
        )

    async def _generate(self, prepared: PreparedNative, started: float) -> GenerateResponse:
        decoder = HarmonyDecoder(1, prepared.rendered.forced_prefix, [])
        async with await self._open(prepared) as stream:
            async for update in stream:
                decoder.step(update.outputs)
        note_reasoning_tokens(decoder.num_reasoning_tokens)
        result = decoder.results()[0]
        num_prompt = len(prepared.rendered.token_ids)
        return GenerateResponse(
            text=result.content,
            reasoning=result.reasoning,
            finish_reason=result.finish_reason,
            tokens_generated=result.num_tokens,
            reasoning_level=prepared.reasoning_level,
            model=self.ctx.model_id,
            processing_time=time.perf_counter() - started,
            usage=GenerationUsage(
                prompt_tokens=num_prompt,
                completion_tokens=result.num_tokens,
                reasoning_tokens=result.num_reasoning_tokens,
                total_tokens=num_prompt + result.num_tokens,
            ),
        )

    async def stream(self, request: GenerateRequest | ChatRequest) -> AsyncIterator[StreamEvent]:
        """Opens the engine request now (errors before any byte) and returns one event per update that
        produced answer text (`delta`), reasoning text (`reasoning`) or the finish reason."""
        prepared = await self.ctx.off_loop(self.prepare, request)
        return await cached_or_streamed(
            self._cache_slot(prepared, "/stream", stream=True),
            lambda: self._open(prepared),
            lambda stream: self._events(prepared, stream),
            prepared.cost,
        )

    async def _events(self, prepared: PreparedNative, stream: EngineStream) -> AsyncIterator[StreamEvent]:
        decoder = HarmonyDecoder(1, prepared.rendered.forced_prefix, [])
        tokens_generated = 0
        async with stream:
            async for update in stream:
                tokens_generated = update.num_completion_tokens
                for delta in decoder.step(update.outputs):
                    if delta.content or delta.reasoning or delta.finish_reason:
                        yield StreamEvent(
                            chunk=StreamDelta(
                                delta=delta.content,
                                finish_reason=delta.finish_reason,
                                tokens_generated=tokens_generated,
                                reasoning=delta.reasoning or None,
                            ),
                            reasoning_level=prepared.reasoning_level,
                            model=self.ctx.model_id,
                        )
        note_reasoning_tokens(decoder.num_reasoning_tokens)

    async def _open(self, prepared: PreparedNative) -> EngineStream:
        return await EngineStream.open(
            self.ctx.engine, prepared.request_id, list(prepared.rendered.token_ids), prepared.params
        )

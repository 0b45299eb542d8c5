"""POST /v1/chat/completions: request → harmony prompt → engine → parsed choices (JSON or chunks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from tkr_embed.engine.outputs import TokenLogprob
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.render import RenderedPrompt
from tkr_embed.protocol.openai_chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    ChoiceLogprobs,
    FunctionCallDelta,
    FunctionCallOut,
    ToolCallDeltaOut,
    ToolCallOut,
)
from tkr_embed.protocol.openai_common import CompletionTokensDetails, PromptTokensDetails, Usage
from tkr_embed.services.accounting import RequestCost, note_reasoning_tokens, reasoning_token_cap
from tkr_embed.services.admission import (
    chat_chars,
    check_prompt_chars,
    check_prompt_tokens,
    check_sequences,
    default_max_tokens_cap,
)
from tkr_embed.services.chat_prompt import harmony_messages, harmony_tool_choice, harmony_tools, render
from tkr_embed.services.context import ModelContext, new_request_id, unix_now
from tkr_embed.services.engine_stream import EngineStream
from tkr_embed.services.errors import BadRequestError
from tkr_embed.services.harmony_decode import ChoiceDelta, HarmonyDecoder, openai_finish_reason
from tkr_embed.services.logprobs import chat_logprobs
from tkr_embed.services.response_caching import CacheSlot, cache_slot, cached_or_created, cached_or_streamed
from tkr_embed.services.stop_strings import stop_list
from tkr_embed.services.structured_output import answer_format, constrained_tools


@dataclass
class PreparedChat:
    request_id: str
    rendered: RenderedPrompt
    params: SamplingParams
    stop: list[str]
    top_logprobs: int | None

    @property
    def cost(self) -> RequestCost:
        n = self.params.n
        return RequestCost(n, len(self.rendered.token_ids) * n, (self.params.max_tokens or 0) * n)


def usage_of(num_prompt: int, num_completion: int, num_reasoning: int, num_cached: int) -> Usage:
    return Usage(
        prompt_tokens=num_prompt,
        completion_tokens=num_completion,
        total_tokens=num_prompt + num_completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=num_cached),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=num_reasoning),
    )


class ChatCompletionService:
    def __init__(self, ctx: ModelContext) -> None:
        self.ctx = ctx

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        """Checks, renders and tokenizes (seconds for a long conversation): call it through `ctx.off_loop`."""
        self.ctx.check_model(request.model)
        check_sequences(1, request.n)
        messages = harmony_messages(request.messages)
        check_prompt_chars(chat_chars(messages), "messages")
        tools = harmony_tools(request.tools)
        tool_choice = harmony_tool_choice(request.tool_choice, tools)
        strict = [bool(tool.function.strict) for tool in request.tools or []]
        tools = constrained_tools(tools, strict, tool_choice, lambda i: f"tools[{i}].function.parameters")
        rendered = render(
            messages,
            reasoning_effort=request.reasoning_effort or self.ctx.default_reasoning_effort,
            tools=tools,
            tool_choice=tool_choice,
            response_format=answer_format(request.response_format, "response_format"),
        )
        check_prompt_tokens(len(rendered.token_ids), "messages")
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        requested = request.max_completion_tokens or request.max_tokens
        cap = default_max_tokens_cap([len(rendered.token_ids)], request.n, requested, param, "messages")
        max_tokens = self.ctx.max_tokens_for(len(rendered.token_ids), requested, param, "messages", cap)
        if request.top_logprobs is not None and not request.logprobs:
            raise BadRequestError("top_logprobs needs logprobs to be true", "top_logprobs")
        top_logprobs = (request.top_logprobs or 0) if request.logprobs else None
        params = request.sampling_params(
            max_tokens,
            top_logprobs,
            stop_token_ids=list(rendered.stop_token_ids),
            constraint=rendered.constraint_for(max_tokens, reasoning_token_cap()),
        )
        return PreparedChat(new_request_id("chatcmpl"), rendered, params, stop_list(request.stop), top_logprobs)

    def _cache_slot(self, prepared: PreparedChat, stream: bool, include_usage: bool = False) -> CacheSlot | None:
        return cache_slot(
            endpoint="/v1/chat/completions",
            model=self.ctx.model_id,
            prompt_token_ids=prepared.rendered.token_ids,
            params=prepared.params,
            stream=stream,
            extra={"stop": prepared.stop, "include_usage": include_usage},
        )

    async def create(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        prepared = await self.ctx.off_loop(self.prepare, request)
        return await cached_or_created(
            self._cache_slot(prepared, stream=False), lambda: self._create(prepared, request.n), prepared.cost
        )

    async def _create(self, prepared: PreparedChat, n: int) -> ChatCompletionResponse:
        decoder = HarmonyDecoder(n, prepared.rendered.forced_prefix, prepared.stop)
        num_cached = 0
        async with await self._open(prepared) as stream:
            async for update in stream:
                decoder.step(update.outputs)
                num_cached = update.num_cached_prompt_tokens
                if decoder.all_finished:
                    break
        note_reasoning_tokens(decoder.num_reasoning_tokens)
        choices = []
        for result in decoder.results():
            tool_calls = [
                ToolCallOut(id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments))
                for call in result.tool_calls
            ]
            reasoning = result.reasoning or None
            choices.append(
                ChatChoice(
                    index=result.index,
                    message=ChatMessageOut(
                        content=result.content if result.content or not tool_calls else None,
                        reasoning=reasoning,
                        reasoning_content=reasoning,
                        tool_calls=tool_calls or None,
                    ),
                    logprobs=self._logprobs(prepared, result.content_logprobs),
                    finish_reason=openai_finish_reason(result.finish_reason),
                )
            )
        results = decoder.results()
        return ChatCompletionResponse(
            id=prepared.request_id,
            created=unix_now(),
            model=self.ctx.model_id,
            choices=choices,
            usage=usage_of(
                len(prepared.rendered.token_ids),
                sum(r.num_tokens for r in results),
                decoder.num_reasoning_tokens,
                num_cached,
            ),
        )

    async def create_stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Opens the engine request now (so errors are raised before any byte is sent) and returns
        the chunks to send."""
        prepared = await self.ctx.off_loop(self.prepare, request)
        include_usage = request.include_usage
        return await cached_or_streamed(
            self._cache_slot(prepared, stream=True, include_usage=include_usage),
            lambda: self._open(prepared),
            lambda stream: self._chunks(prepared, stream, request.n, include_usage),
            prepared.cost,
        )

    async def _chunks(
        self, prepared: PreparedChat, stream: EngineStream, n: int, include_usage: bool
    ) -> AsyncIterator[ChatCompletionChunk]:
        created = unix_now()
        decoder = HarmonyDecoder(n, prepared.rendered.forced_prefix, prepared.stop)
        num_cached = 0

        def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=prepared.request_id, created=created, model=self.ctx.model_id, choices=choices, usage=usage
            )

        yield chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content="")) for i in range(n)])
        async with stream:
            async for update in stream:
                num_cached = update.num_cached_prompt_tokens
                choices = [self._chunk_choice(prepared, d) for d in decoder.step(update.outputs) if not d.is_empty]
                if choices:
                    yield chunk(choices)
                if decoder.all_finished:
                    break
        note_reasoning_tokens(decoder.num_reasoning_tokens)
        if include_usage:
            results = decoder.results()
            yield chunk(
                [],
                usage_of(
                    len(prepared.rendered.token_ids),
                    sum(r.num_tokens for r in results),
                    decoder.num_reasoning_tokens,
                    num_cached,
                ),
            )

    def _chunk_choice(self, prepared: PreparedChat, delta: ChoiceDelta) -> ChatChunkChoice:
        tool_calls = [
            ToolCallDeltaOut(
                index=call.index,
                id=call.id,
                type="function" if call.id else None,
                function=FunctionCallDelta(name=call.name, arguments=call.arguments),
            )
            for call in delta.tool_calls
        ]
        return ChatChunkChoice(
            index=delta.index,
            delta=ChatDelta(
                content=delta.content or None,
                reasoning=delta.reasoning or None,
                reasoning_content=delta.reasoning or None,
                tool_calls=tool_calls or None,
            ),
            logprobs=self._logprobs(prepared, delta.content_logprobs) if delta.content_logprobs else None,
            finish_reason=openai_finish_reason(delta.finish_reason) if delta.finish_reason else None,
        )

    def _logprobs(self, prepared: PreparedChat, logprobs: list[TokenLogprob]) -> ChoiceLogprobs | None:
        if prepared.top_logprobs is None:
            return None
        return chat_logprobs(self.ctx.tokenizer, logprobs, prepared.top_logprobs)

    async def _open(self, prepared: PreparedChat) -> EngineStream:
        return await EngineStream.open(
            self.ctx.engine, prepared.request_id, list(prepared.rendered.token_ids), prepared.params
        )

"""POST /v1/completions: a raw text prompt (no harmony) → engine → text choices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tkr_embed.engine.outputs import FinishReason, TokenLogprob
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.protocol.limits import request_limits
from tkr_embed.protocol.openai_common import PromptTokensDetails, Usage
from tkr_embed.protocol.openai_completions import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from tkr_embed.services.accounting import RequestCost, charge_request
from tkr_embed.services.admission import (
    check_prompt_chars,
    check_prompt_tokens,
    check_sequences,
    default_max_tokens_cap,
)
from tkr_embed.services.context import ModelContext, new_request_id, unix_now
from tkr_embed.services.engine_stream import EngineStream
from tkr_embed.services.errors import BadRequestError
from tkr_embed.services.harmony_decode import openai_finish_reason
from tkr_embed.services.logprobs import completion_logprobs
from tkr_embed.services.response_caching import CacheSlot, cache_slot, cached_or_created, cached_or_streamed
from tkr_embed.services.stop_strings import stop_list
from tkr_embed.services.stream_merge import merge_streams


@dataclass
class PreparedCompletion:
    request_id: str
    prompt_token_ids: list[int]
    prompt_text: str  # what echo answers with: empty without echo
    params: SamplingParams
    echo: bool
    top_logprobs: int | None


def cost_of(prepared: list[PreparedCompletion]) -> RequestCost:
    return RequestCost(
        sum(one.params.n for one in prepared),
        sum(len(one.prompt_token_ids) * one.params.n for one in prepared),
        sum((one.params.max_tokens or 0) * one.params.n for one in prepared),
    )


def finish_reason_of(reason: FinishReason | None) -> str | None:
    return None if reason is None else openai_finish_reason(reason.value)


class CompletionService:
    def __init__(self, ctx: ModelContext) -> None:
        self.ctx = ctx

    def prepare(self, request: CompletionRequest) -> list[PreparedCompletion]:
        """One prepared engine request per prompt; any bad prompt refuses the whole request. Tokenizes
        (seconds for megabytes of text): call it through `ctx.off_loop`."""
        self.ctx.check_model(request.model)
        if request.max_tokens == 0 and not request.echo:
            # vLLM refuses it too: nothing would be generated and nothing returned.
            raise BadRequestError(
                "max_tokens 0 generates nothing: it is accepted only with echo true, to score the prompt", "max_tokens"
            )
        prompts = request.prompts()
        if not prompts:
            raise BadRequestError("prompt must not be empty", "prompt")
        max_prompts = request_limits().max_prompts
        if len(prompts) > max_prompts:
            raise BadRequestError(
                f"at most {max_prompts} prompts in one request (got {len(prompts)}; the server's max_prompts)",
                "prompt",
            )
        check_sequences(len(prompts), request.n)
        check_prompt_chars(sum(len(prompt) for prompt in prompts if isinstance(prompt, str)), "prompt")
        params = ["prompt" if len(prompts) == 1 else f"prompt[{index}]" for index in range(len(prompts))]
        for prompt, param in zip(prompts, params, strict=True):
            if isinstance(prompt, str) and not prompt:
                raise BadRequestError("prompt must not be empty", param)
        ids = [self.ctx.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt) for prompt in prompts]
        check_prompt_tokens(sum(len(prompt_ids) for prompt_ids in ids), "prompt")
        cap = default_max_tokens_cap([len(i) for i in ids], request.n, request.max_tokens, "max_tokens", "prompt")
        stop = stop_list(request.stop)
        return [
            self._prepare_one(request, prompt, prompt_ids, param, stop, cap)
            for prompt, prompt_ids, param in zip(prompts, ids, params, strict=True)
        ]

    def _prepare_one(
        self,
        request: CompletionRequest,
        prompt: str | list[int],
        prompt_ids: list[int],
        param: str,
        stop: list[str],
        cap: int | None,
    ) -> PreparedCompletion:
        max_tokens = self.ctx.max_tokens_for(len(prompt_ids), request.max_tokens, "max_tokens", param, cap)
        params = request.sampling_params(max_tokens, request.logprobs, stop=stop)
        params.ignore_eos = request.ignore_eos
        # The echoed prompt comes with its tokens' logprobs when logprobs are asked for (as OpenAI and vLLM answer).
        params.prompt_logprobs = request.logprobs if request.echo else None
        self.ctx.check_prompt(prompt_ids, params, param)
        if not request.echo:
            prompt_text = ""
        else:
            prompt_text = prompt if isinstance(prompt, str) else self.ctx.tokenizer.decode(prompt_ids)
        return PreparedCompletion(
            new_request_id("cmpl"), prompt_ids, prompt_text, params, request.echo, request.logprobs
        )

    def _cache_slot(self, prepared: PreparedCompletion, stream: bool, include_usage: bool = False) -> CacheSlot | None:
        return cache_slot(
            endpoint="/v1/completions",
            model=self.ctx.model_id,
            prompt_token_ids=prepared.prompt_token_ids,
            params=prepared.params,
            stream=stream,
            extra={"echo": prepared.echo, "include_usage": include_usage},
        )

    async def create(self, request: CompletionRequest) -> CompletionResponse:
        prepared = await self.ctx.off_loop(self.prepare, request)
        if len(prepared) > 1:
            # Several prompts: one engine request each, run together (none cached: a cache entry is one prompt's).
            await charge_request(cost_of(prepared))
            tasks = [asyncio.ensure_future(self._create(one)) for one in prepared]
            try:
                responses = await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
            return self._combined(responses, request.n)
        return await cached_or_created(
            self._cache_slot(prepared[0], stream=False), lambda: self._create(prepared[0]), cost_of(prepared)
        )

    def _combined(self, responses: list[CompletionResponse], n: int) -> CompletionResponse:
        """One response of every prompt's choices, numbered prompt-major (prompt p, choice i → p*n + i)."""
        choices = [
            choice.model_copy(update={"index": number * n + choice.index})
            for number, response in enumerate(responses)
            for choice in response.choices
        ]
        usages = [response.usage for response in responses if response.usage is not None]
        return CompletionResponse(
            id=responses[0].id,
            created=responses[0].created,
            model=self.ctx.model_id,
            choices=choices,
            usage=self._summed(usages),
        )

    @staticmethod
    def _summed(usages: list[Usage]) -> Usage:
        return Usage(
            prompt_tokens=sum(u.prompt_tokens for u in usages),
            completion_tokens=sum(u.completion_tokens for u in usages),
            total_tokens=sum(u.total_tokens for u in usages),
            prompt_tokens_details=PromptTokensDetails(
                cached_tokens=sum(u.prompt_tokens_details.cached_tokens for u in usages if u.prompt_tokens_details)
            ),
        )

    async def _create(self, prepared: PreparedCompletion) -> CompletionResponse:
        n = prepared.params.n
        texts = [""] * n
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        num_completion = num_cached = 0
        prompt_logprobs: list[TokenLogprob | None] | None = None
        async with await self._open(prepared) as stream:
            async for update in stream:
                num_cached = update.num_cached_prompt_tokens
                prompt_logprobs = prompt_logprobs or update.prompt_logprobs
                for output in update.outputs:
                    texts[output.index] = output.text
                    logprobs[output.index].extend(output.new_logprobs or [])
                    finish[output.index] = finish_reason_of(output.finish_reason)
                num_completion = update.num_completion_tokens
        prefix = prepared.prompt_text
        choices = [
            CompletionChoice(
                index=i,
                text=prefix + texts[i],
                logprobs=self._logprobs(prepared, logprobs[i], len(prefix), prepared.echo, prompt_logprobs),
                finish_reason=finish[i] or "stop",
            )
            for i in range(n)
        ]
        return CompletionResponse(
            id=prepared.request_id,
            created=unix_now(),
            model=self.ctx.model_id,
            choices=choices,
            usage=self._usage(prepared, num_completion, num_cached),
        )

    async def create_stream(self, request: CompletionRequest) -> AsyncIterator[CompletionResponse]:
        prepared = await self.ctx.off_loop(self.prepare, request)
        include_usage = request.include_usage
        if len(prepared) > 1:
            await charge_request(cost_of(prepared))
            return await self._open_merged(prepared, include_usage)
        return await cached_or_streamed(
            self._cache_slot(prepared[0], stream=True, include_usage=include_usage),
            lambda: self._open(prepared[0]),
            lambda stream: self._chunks(prepared[0], stream, include_usage),
            cost_of(prepared),
        )

    async def _open_merged(
        self, prepared: list[PreparedCompletion], include_usage: bool
    ) -> AsyncIterator[CompletionResponse]:
        """Opens every prompt's engine request now (errors before any byte; the opened ones are
        aborted if a later one fails) and returns their chunks interleaved, renumbered prompt-major."""
        streams: list[EngineStream] = []
        try:
            for one in prepared:
                streams.append(await self._open(one))
        except BaseException:
            for stream in streams:
                await stream.aclose()
            raise
        return self._merged_chunks(prepared, streams, include_usage)

    async def _merged_chunks(
        self, prepared: list[PreparedCompletion], streams: list[EngineStream], include_usage: bool
    ) -> AsyncIterator[CompletionResponse]:
        n = prepared[0].params.n
        sources = [self._chunks(one, stream, include_usage) for one, stream in zip(prepared, streams, strict=True)]
        usages: list[Usage] = []
        try:
            async for number, chunk in merge_streams(sources):
                if not chunk.choices and chunk.usage is not None:
                    usages.append(chunk.usage)  # each prompt's usage chunk: summed into one at the end
                    continue
                choices = [c.model_copy(update={"index": number * n + c.index}) for c in chunk.choices]
                yield chunk.model_copy(update={"id": prepared[0].request_id, "choices": choices})
        finally:
            for stream in streams:
                await stream.aclose()
        if include_usage:
            yield CompletionResponse(
                id=prepared[0].request_id,
                created=unix_now(),
                model=self.ctx.model_id,
                choices=[],
                usage=self._summed(usages),
            )

    async def _chunks(
        self, prepared: PreparedCompletion, stream: EngineStream, include_usage: bool
    ) -> AsyncIterator[CompletionResponse]:
        created = unix_now()
        offsets = [len(prepared.prompt_text)] * prepared.params.n
        num_completion = num_cached = 0

        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionResponse:
            return CompletionResponse(
                id=prepared.request_id, created=created, model=self.ctx.model_id, choices=choices, usage=usage
            )

        def echo(prompt_logprobs: list[TokenLogprob | None] | None) -> CompletionResponse:
            logprobs = self._logprobs(prepared, [], 0, echoed=True, prompt_logprobs=prompt_logprobs)
            return chunk(
                [
                    CompletionChoice(index=i, text=prepared.prompt_text, logprobs=logprobs)
                    for i in range(prepared.params.n)
                ]
            )

        echo_pending = prepared.echo
        if echo_pending and prepared.top_logprobs is None:
            yield echo(None)
            echo_pending = False
        async with stream:
            async for update in stream:
                if echo_pending:  # the prompt's logprobs come with the engine's first update
                    yield echo(update.prompt_logprobs)
                    echo_pending = False
                num_completion = update.num_completion_tokens
                num_cached = update.num_cached_prompt_tokens
                choices = []
                for output in update.outputs:
                    if not output.new_text and output.finish_reason is None:
                        continue
                    choices.append(
                        CompletionChoice(
                            index=output.index,
                            text=output.new_text,
                            logprobs=self._logprobs(prepared, output.new_logprobs or [], offsets[output.index]),
                            finish_reason=finish_reason_of(output.finish_reason),
                        )
                    )
                    offsets[output.index] += len(output.new_text)
                if choices:
                    yield chunk(choices)
        if include_usage:
            yield chunk([], self._usage(prepared, num_completion, num_cached))

    def _usage(self, prepared: PreparedCompletion, num_completion: int, num_cached: int) -> Usage:
        num_prompt = len(prepared.prompt_token_ids)
        return Usage(
            prompt_tokens=num_prompt,
            completion_tokens=num_completion,
            total_tokens=num_prompt + num_completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=num_cached),
        )

    def _logprobs(
        self,
        prepared: PreparedCompletion,
        generated: list[TokenLogprob],
        offset: int,
        echoed: bool = False,
        prompt_logprobs: list[TokenLogprob | None] | None = None,
    ) -> CompletionLogprobs | None:
        """The generated tokens' logprobs from `offset` in the choice's text; `echoed`: after the prompt's (from 0),
        null for its first token, and for every token of a request stopped before its prompt was scored."""
        if prepared.top_logprobs is None:
            return None
        tokenizer, top_k = self.ctx.tokenizer, prepared.top_logprobs
        result = completion_logprobs(tokenizer, [entry.token_id for entry in generated], generated, top_k, offset)
        if not echoed:
            return result
        prompt_ids = prepared.prompt_token_ids
        prompt = completion_logprobs(tokenizer, prompt_ids, prompt_logprobs or [None] * len(prompt_ids), top_k, 0)
        return CompletionLogprobs(
            tokens=prompt.tokens + result.tokens,
            token_logprobs=prompt.token_logprobs + result.token_logprobs,
            top_logprobs=prompt.top_logprobs + result.top_logprobs,
            text_offset=prompt.text_offset + result.text_offset,
        )

    async def _open(self, prepared: PreparedCompletion) -> EngineStream:
        return await EngineStream.open(self.ctx.engine, prepared.request_id, prepared.prompt_token_ids, prepared.params)

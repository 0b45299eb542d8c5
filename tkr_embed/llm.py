"""The offline API: `LLM(model).generate(prompts, params)`, batched by the engine."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason, RequestOutput, TokenLogprob
from tkr_embed.engine.runner import ModelRunner
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.tokenizer import Tokenizer

Prompt = str | list[int]


@dataclass
class CompletionResult:
    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None


@dataclass
class GenerationResult:
    prompt_token_ids: list[int]
    outputs: list[CompletionResult]
    num_cached_prompt_tokens: int = 0

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.outputs[0].finish_reason


_ENGINE_FIELDS = {f.name for f in fields(EngineConfig)}


class LLM:
    """Generate for many prompts at once on one device.

    Keyword arguments naming EngineConfig fields configure the engine (max_num_seqs, block_size,
    num_kv_blocks, enable_prefix_caching...); the others go to the runner (kv_cache_bytes,
    kv_cache_memory_fraction, max_model_len).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: Any = None,
        quantization: str = "auto",
        tokenizer: Tokenizer | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from tkr_embed.backends.factory import create_runner

        config = EngineConfig(**{k: v for k, v in engine_kwargs.items() if k in _ENGINE_FIELDS})
        runner_kwargs = {k: v for k, v in engine_kwargs.items() if k not in _ENGINE_FIELDS}
        runner_kwargs.setdefault("block_size", config.block_size)
        runner_kwargs.setdefault("max_num_batched_tokens", config.max_num_batched_tokens)
        runner_kwargs.setdefault("max_idle_step_tokens", config.max_num_batched_tokens_idle)
        if config.num_kv_blocks is not None:
            runner_kwargs.setdefault("num_kv_blocks", config.num_kv_blocks)
        if config.max_model_len is not None:
            runner_kwargs.setdefault("max_model_len", config.max_model_len)
        runner = create_runner(model, device=device, dtype=dtype, quantization=quantization, **runner_kwargs)
        self._init(runner, tokenizer, config)

    @classmethod
    def from_runner(cls, runner: ModelRunner, tokenizer: Tokenizer | None = None, **engine_kwargs: Any) -> LLM:
        """An LLM around an already built runner (tests, random-weight benchmarks)."""
        llm = cls.__new__(cls)
        llm._init(runner, tokenizer, EngineConfig(**engine_kwargs))
        return llm

    def _init(self, runner: ModelRunner, tokenizer: Tokenizer | None, config: EngineConfig) -> None:
        if tokenizer is None:
            from tkr_embed.harmony.tokenizer import get_tokenizer

            tokenizer = get_tokenizer()
        self.tokenizer = tokenizer
        self.engine = LLMEngine(runner, tokenizer, config)
        self._request_ids = itertools.count()

    def generate(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | list[SamplingParams] | None = None,
    ) -> list[GenerationResult]:
        """One result per prompt, in order. A prompt is plain text or a list of token ids."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"got {len(params_list)} SamplingParams for {len(prompts)} prompts")
        requests = []
        for prompt, prompt_params in zip(prompts, params_list):
            token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
            self.engine.validate_request(token_ids, prompt_params)    # reject before running any
            requests.append((f"offline-{next(self._request_ids)}", token_ids, prompt_params))
        request_ids = [request_id for request_id, _, _ in requests]
        pending = list(reversed(requests))
        finals: dict[str, RequestOutput] = {}
        logprobs: dict[tuple[str, int], list[TokenLogprob]] = {}
        try:
            while pending or self.engine.has_unfinished_requests():
                # Feed the engine no faster than its waiting queue takes them.
                while pending and len(self.engine.scheduler.waiting) < self.engine.config.max_waiting:
                    self.engine.add_request(*pending.pop())
                for output in self.engine.step():
                    for completion in output.outputs:
                        if completion.new_logprobs is not None:
                            key = (output.request_id, completion.index)
                            logprobs.setdefault(key, []).extend(completion.new_logprobs)
                    if output.finished:
                        finals[output.request_id] = output
        except BaseException:
            for request_id in self.engine.unfinished_request_ids():
                self.engine.abort_request(request_id)
            raise
        return [self._result(finals[rid], logprobs, params) for rid, params in zip(request_ids, params_list)]

    @staticmethod
    def _result(
        output: RequestOutput, logprobs: dict[tuple[str, int], list[TokenLogprob]], params: SamplingParams
    ) -> GenerationResult:
        completions = [
            CompletionResult(
                token_ids=c.token_ids,
                text=c.text,
                finish_reason=c.finish_reason,
                logprobs=logprobs.get((output.request_id, c.index), []) if params.logprobs is not None else None,
                stop_reason=c.stop_reason,
            )
            for c in output.outputs
        ]
        return GenerationResult(output.prompt_token_ids, completions, output.num_cached_prompt_tokens)

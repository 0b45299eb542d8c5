"""The offline API: `LLM(model).generate(prompts, params)`, batched by the engine."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tkr_embed.engine.args import EngineArgs
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason, RequestOutput, TokenLogprob
from tkr_embed.engine.runner import ModelRunner
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, run_to_completion
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
    # with SamplingParams.prompt_logprobs: one per prompt token, None for the first (RequestOutput's)
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.outputs[0].finish_reason


class LLM:
    """Generate for many prompts at once on one device.

    Keyword arguments are EngineArgs fields (max_num_seqs, max_num_batched_tokens, num_kv_blocks,
    kv_cache_memory_fraction, max_model_len, enable_prefix_caching, warm_up...), with the server's defaults; the
    engine is built as the server builds it (`tkr_embed.builder`) and runs the server's step loop.
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
        from tkr_embed.builder import build_engine

        args = EngineArgs(model=str(model), device=device, dtype=dtype, quantization=quantization, **engine_kwargs)
        self._init(build_engine(args, tokenizer))

    @classmethod
    def from_runner(cls, runner: ModelRunner, tokenizer: Tokenizer | None = None, **engine_kwargs: Any) -> LLM:
        """An LLM around an already built runner (tests with toy runners); keyword arguments are EngineConfig's."""
        llm = cls.__new__(cls)
        llm._init(LLMEngine(runner, tokenizer or _harmony_tokenizer(), EngineConfig(**engine_kwargs)))
        return llm

    def _init(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
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
        arrival = time.monotonic()
        for prompt, prompt_params in zip(prompts, params_list, strict=True):
            token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
            self.engine.validate_request(token_ids, prompt_params)  # reject before running any
            requests.append(AddRequest(f"offline-{next(self._request_ids)}", token_ids, prompt_params, arrival))
        finals: dict[str, RequestOutput] = {}
        logprobs: dict[tuple[str, int], list[TokenLogprob]] = {}
        prompt_logprobs: dict[str, list[TokenLogprob | None]] = {}

        def collect(output: RequestOutput) -> None:
            if output.prompt_logprobs is not None:
                prompt_logprobs[output.request_id] = output.prompt_logprobs
            for completion in output.outputs:
                if completion.new_logprobs is not None:
                    logprobs.setdefault((output.request_id, completion.index), []).extend(completion.new_logprobs)
            if output.finished:
                finals[output.request_id] = output

        run_to_completion(self.engine, requests, collect)
        return [
            self._result(finals[request.request_id], logprobs, request.params, prompt_logprobs.get(request.request_id))
            for request in requests
        ]

    @staticmethod
    def _result(
        output: RequestOutput,
        logprobs: dict[tuple[str, int], list[TokenLogprob]],
        params: SamplingParams,
        prompt_logprobs: list[TokenLogprob | None] | None,
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
        return GenerationResult(output.prompt_token_ids, completions, output.num_cached_prompt_tokens, prompt_logprobs)


def _harmony_tokenizer() -> Tokenizer:
    from tkr_embed.harmony.tokenizer import get_tokenizer

    return get_tokenizer()

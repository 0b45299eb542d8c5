"""A scripted EngineClient for the HTTP tests: it replays given token sequences one token per update."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.errors import EngineOverloadedError, InvalidRequestError
from tkr_embed.engine.outputs import (
    CompletionOutput,
    EngineStats,
    FinishReason,
    RequestOutput,
    RequestTimings,
    TokenLogprob,
)
from tkr_embed.engine.runner import RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams

STOP_TOKENS = (200002, 200012)


def prompt_scores(prompt: list[int], top_k: int | None) -> list[TokenLogprob | None] | None:
    """The fake's prompt logprobs: none for the first token; token i scores -i/10, and the id after it is always
    the better alternative (-0.05)."""
    if top_k is None:
        return None
    return [None] + [
        TokenLogprob(token, -position / 10, [(token + 1, -0.05), (token, -position / 10)][:top_k])
        for position, token in enumerate(prompt[1:], start=1)
    ]


@dataclass
class SubmittedRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass
class FakeEngine(EngineClient):
    """Each request gets `script(prompt, params)` (the same token ids for every choice); a choice
    stops at a stop token or `max_tokens`; `hang_after` makes it wait for an abort instead;
    `abort_after` ends it with finish reason ABORT, as an engine shutting down does."""

    script: Callable[[list[int], SamplingParams], Sequence[int]] = lambda prompt, params: [200002]

    def reset(self) -> None:
        self.script = lambda prompt, params: [200002]
        self.max_waiting = 8
        self.hang_after = None
        self.abort_after = None
        self.submitted.clear()
        self.aborted.clear()

    decode: Callable[[list[int]], str] = lambda ids: ""
    max_model_len: int = 4096
    max_waiting: int = 8
    hang_after: int | None = None  # emit this many tokens, then wait until aborted
    abort_after: int | None = None  # the engine itself aborts (as at shutdown) on this token
    submitted: list[SubmittedRequest] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    finished_ids: list[str] = field(default_factory=list)
    is_running: bool = True  # False: the engine is dead, as a crashed engine process is
    dead_reason: str | None = None
    restarts: int = 0
    hold_restart: bool = False  # a test sets it to look at the server while a restart is under way

    async def restart(self) -> None:
        while self.hold_restart:
            await asyncio.sleep(0.01)
        self.restarts += 1
        self.is_running, self.dead_reason = True, None

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo(
            model_name="gpt-oss-fake",
            max_model_len=self.max_model_len,
            vocab_size=201088,
            block_size=16,
            num_kv_blocks=64,
            eos_token_ids=STOP_TOKENS,
            device="cpu",
            dtype="float32",
            quantization="none",
        )

    async def start(self) -> None:
        return None

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        return self._generate(request_id, prompt_token_ids, params)

    async def _generate(
        self, request_id: str, prompt: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        if len(prompt) + (params.max_tokens or 0) > self.max_model_len:
            raise InvalidRequestError("too long", "max_tokens")
        if len(self.running) >= self.max_waiting:
            raise EngineOverloadedError(retry_after_s=2.0)
        self.submitted.append(SubmittedRequest(request_id, list(prompt), params))
        self.running.add(request_id)
        timings = RequestTimings(arrival=time.monotonic())
        script = list(self.script(prompt, params))
        produced: list[list[int]] = [[] for _ in range(params.n)]
        done = [False] * params.n
        prompt_logprobs = prompt_scores(prompt, params.prompt_logprobs)
        try:
            if params.max_tokens == 0:  # the prompt scored, nothing generated
                done = [True] * params.n
                outputs = [CompletionOutput(i, [], [], "", "", FinishReason.LENGTH) for i in range(params.n)]
                yield RequestOutput(request_id, list(prompt), outputs, True, 0, timings, prompt_logprobs)
                self.finished_ids.append(request_id)
                return
            step = 0
            while not all(done):
                if request_id in self.aborted:
                    return
                if self.hang_after is not None and step >= self.hang_after:
                    await asyncio.sleep(0.01)
                    continue
                outputs = []
                for index in range(params.n):
                    if done[index]:
                        continue
                    token = script[step] if step < len(script) else 200002
                    produced[index].append(token)
                    finish = None
                    if self.abort_after is not None and step + 1 >= self.abort_after:
                        finish = FinishReason.ABORT
                    elif token in params.stop_token_ids or token in STOP_TOKENS:
                        finish = FinishReason.STOP
                    elif params.max_tokens is not None and len(produced[index]) >= params.max_tokens:
                        finish = FinishReason.LENGTH
                    done[index] = finish is not None
                    logprobs = None
                    if params.logprobs is not None:
                        alternatives = [(token, -0.5), (token + 1, -1.5)][: params.logprobs]
                        logprobs = [TokenLogprob(token, -0.5, alternatives)]
                    outputs.append(
                        CompletionOutput(
                            index=index,
                            new_token_ids=[token],
                            token_ids=list(produced[index]),
                            new_text=self.decode([token]),
                            text=self.decode(produced[index]),
                            finish_reason=finish,
                            new_logprobs=logprobs,
                        )
                    )
                step += 1
                await asyncio.sleep(0)
                yield RequestOutput(request_id, list(prompt), outputs, all(done), 0, timings, prompt_logprobs)
                prompt_logprobs = None  # they come with the first update only
            self.finished_ids.append(request_id)
        finally:
            # The contract: a consumer that stops iterating (aclose, cancellation) aborts the request.
            if not all(done) and request_id not in self.aborted:
                self.aborted.append(request_id)
            self.running.discard(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id in self.running and request_id not in self.aborted:
            self.aborted.append(request_id)

    def stats(self) -> EngineStats:
        return EngineStats(len(self.running), 0, 64, 0, 64, 0, 0, 0, 0, len(self.finished_ids), 0)

    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        return None

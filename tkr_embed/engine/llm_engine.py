"""The synchronous engine core: schedule, run, postprocess (no torch here)."""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tkr_embed.engine.block_manager import BlockManager
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.detokenizer import IncrementalDetokenizer
from tkr_embed.engine.errors import EngineOverloadedError, InvalidRequestError
from tkr_embed.engine.outputs import EngineStats, RequestOutput, RequestTimings, StepPhaseTimes
from tkr_embed.engine.runner import ModelRunner, SampledToken, ScheduledBatch
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.scheduler import Scheduler
from tkr_embed.engine.sequence import Request, Sequence
from tkr_embed.engine.tokenizer import Tokenizer


@dataclass
class LaunchedStep:
    """A step queued on the runner: its batch, and the callable that waits for its sampled tokens."""

    batch: ScheduledBatch
    finish: Callable[[], list[SampledToken]]
    schedule_s: float = 0.0  # host time spent scheduling it
    launch_s: float = 0.0  # and launching it


# Sequence ids are unique in the process, not only in one engine: a runner keeps per-sequence state by id (its
# penalty histories), and several engines may share one runner (tests, benchmarks).
_SEQ_IDS = itertools.count()


class LLMEngine:
    """Drives a ModelRunner over many requests at once: each step is planned, launched on the runner and
    postprocessed. `StepLoop` (engine/step_loop.py) is the one loop that runs those steps.

    Not thread-safe: call every method from one thread (`AsyncEngine` runs the whole step loop in
    its engine thread and guards the engine with a lock for the event loop's reads).
    """

    def __init__(
        self, runner: ModelRunner, tokenizer: Tokenizer | None = None, config: EngineConfig | None = None
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        info = runner.info
        self.config = (config or EngineConfig()).within(info.max_step_tokens)
        num_blocks = min(self.config.num_kv_blocks or info.num_kv_blocks, info.num_kv_blocks)
        self.block_manager = BlockManager(num_blocks, info.block_size, self.config.enable_prefix_caching)
        # A sequence must fit the context and, alone, the block pool.
        self.max_model_len = min(
            info.max_model_len, self.config.max_model_len or info.max_model_len, num_blocks * info.block_size
        )
        self.vocab_size = info.vocab_size
        self.scheduler = Scheduler(self.config, self.block_manager, info.eos_token_ids, self.max_model_len)
        self._requests: dict[str, Request] = {}
        self._seq_ids = _SEQ_IDS
        self.step_times = StepPhaseTimes()
        self.engine_id = uuid.uuid4().hex
        # False: outputs carry the deltas only (an engine process, whose parent keeps the sums, sets it)
        self.cumulative_outputs = True

    # --- requests -----------------------------------------------------------------------------

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, arrival: float | None = None
    ) -> None:
        """Queue a request; raise InvalidRequestError or EngineOverloadedError before queueing anything."""
        if request_id in self._requests:
            raise InvalidRequestError(f"request id {request_id!r} is already in use", "request_id")
        self.validate_request(prompt_token_ids, params)
        if len(self.scheduler.waiting) >= self.config.max_waiting:
            raise EngineOverloadedError()
        request = Request(request_id, list(prompt_token_ids), params, RequestTimings(arrival or time.monotonic()))
        for index in range(params.n):
            sampling = params
            if params.n > 1:
                seed = None if params.seed is None else params.seed + index
                sampling = dataclasses.replace(params, n=1, seed=seed)
            request.seqs.append(
                Sequence(
                    seq_id=next(self._seq_ids),
                    index=index,
                    request=request,
                    sampling=sampling,
                    all_token_ids=list(prompt_token_ids),
                    num_prompt_tokens=len(prompt_token_ids),
                    detokenizer=self._detokenizer(params),
                )
            )
        self._requests[request_id] = request
        self.scheduler.add_request(request)

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Abort an unfinished request and free its blocks; its final output, or None if unknown."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        self.scheduler.abort_request(request)
        self._release_runner_state()
        return request.take_output(self.cumulative_outputs)

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def unfinished_request_ids(self) -> list[str]:
        return list(self._requests)

    # --- a step: plan, launch, postprocess (StepLoop runs them) --------------------------------

    def plan_step(self) -> tuple[ScheduledBatch, float] | None:
        """The next step's batch and the seconds spent scheduling it; None when there is nothing to compute.
        (The step loop plans under its lock and launches outside it.)"""
        begin = time.perf_counter()
        batch = self.scheduler.schedule()
        return (batch, time.perf_counter() - begin) if batch.entries else None

    def plan_lookahead(self, current: LaunchedStep) -> tuple[ScheduledBatch, float] | None:
        """The decode step after `current`, scheduled before its tokens are known (`Scheduler.lookahead`);
        None when lookahead is off, the runner cannot take the tokens on the device, or the batch
        does not qualify."""
        if not self.config.lookahead or not self.runner.can_follow(current.batch):
            return None
        begin = time.perf_counter()
        batch = self.scheduler.lookahead(current.batch, penalties=self.runner.follows_penalties)
        return (batch, time.perf_counter() - begin) if batch is not None else None

    def launch(
        self, batch: ScheduledBatch, schedule_s: float = 0.0, previous: LaunchedStep | None = None
    ) -> LaunchedStep:
        """Queue `batch` on the runner (with `previous`: a lookahead step, fed that step's tokens)."""
        begin = time.perf_counter()
        finish = self.runner.launch(batch, previous=previous.finish) if previous else self.runner.launch(batch)
        return LaunchedStep(batch, finish, schedule_s, time.perf_counter() - begin)

    def postprocess(
        self, batch: ScheduledBatch, sampled: list[SampledToken], following: LaunchedStep | None = None
    ) -> list[RequestOutput]:
        """Take a step's tokens; -> the updated requests' outputs. The constraint states take them first, all in one
        call (a grammar engine takes them in parallel). `following`: the lookahead step launched after `batch`, whose
        masks depend on these tokens: the runner may then begin resolving those masks (`ModelRunner.previous_taken`),
        so a grammar fills them while the rest of the step's bookkeeping, the planning and the staging of the next
        step go on."""
        self.scheduler.advance_constraints(batch, sampled)
        if following is not None:
            self.runner.previous_taken(following.finish)
        outputs = []
        for request in self.scheduler.postprocess(batch, sampled):
            outputs.append(request.take_output(self.cumulative_outputs))
            if request.is_finished:
                del self._requests[request.request_id]
        self._release_runner_state()
        return outputs

    def stats(self) -> EngineStats:
        counters = self.scheduler.counters
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_blocks_total=self.block_manager.num_blocks,
            kv_blocks_used=self.block_manager.num_used_blocks,
            kv_blocks_free=self.block_manager.num_free_blocks,
            prefix_cache_queries=counters.prefix_cache_queries,
            prefix_cache_hits=counters.prefix_cache_hits,
            prompt_tokens_prefilled=counters.prompt_tokens_prefilled,
            tokens_decoded=counters.tokens_decoded,
            requests_finished=counters.requests_finished,
            preemptions=counters.preemptions,
            steps=self.step_times.steps,
            step_phase_seconds=dict(self.step_times.seconds),
            finish_reasons=dict(counters.finish_reasons),
            engine_id=self.engine_id,
        )

    # --- helpers ------------------------------------------------------------------------------

    def _release_runner_state(self) -> None:
        for seq_id in self.scheduler.take_released_seq_ids():
            self.runner.release(seq_id)

    def _detokenizer(self, params: SamplingParams) -> IncrementalDetokenizer | None:
        if self.tokenizer is None:
            return None
        return IncrementalDetokenizer(self.tokenizer, params.stop, params.include_stop_str_in_output)

    def validate_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise InvalidRequestError (naming the field) if this request can never be served."""
        check_request(prompt_token_ids, params, self.max_model_len, self.vocab_size, self.tokenizer is not None)


def ids_in_vocabulary(token_ids: list[int], vocab_size: int) -> bool:
    """True when every id is an integer in [0, vocab_size). A request is checked this way up to three times
    (its service, the engine client, the engine), so the usual case, plain ints, takes C-speed passes."""
    if set(map(type, token_ids)) <= {int}:
        return 0 <= min(token_ids) and max(token_ids) < vocab_size
    return all(isinstance(t, int) and 0 <= t < vocab_size for t in token_ids)


def check_request(
    prompt_token_ids: list[int], params: SamplingParams, max_model_len: int, vocab_size: int, has_tokenizer: bool
) -> None:
    """Raise InvalidRequestError (naming the field) if a request can never be served by an engine with
    this context length and vocabulary (`LLMEngine.validate_request`, and a client in another process)."""
    num_prompt = len(prompt_token_ids)
    if num_prompt == 0:
        raise InvalidRequestError("the prompt must not be empty", "prompt")
    if num_prompt >= max_model_len:
        raise InvalidRequestError(
            f"the prompt has {num_prompt} tokens; at most {max_model_len - 1} fit this model's context", "prompt"
        )
    if not ids_in_vocabulary(prompt_token_ids, vocab_size):
        raise InvalidRequestError(f"prompt token ids must be integers in [0, {vocab_size})", "prompt")
    if params.max_tokens is not None and num_prompt + params.max_tokens > max_model_len:
        raise InvalidRequestError(
            f"the prompt ({num_prompt} tokens) plus max_tokens ({params.max_tokens}) exceeds the context "
            f"length of {max_model_len} tokens",
            "max_tokens",
        )
    if any(token_id >= vocab_size for token_id, _ in params.logit_bias):
        raise InvalidRequestError(f"logit_bias token ids must be in [0, {vocab_size})", "logit_bias")
    if params.stop and not has_tokenizer:
        raise InvalidRequestError("stop strings need a tokenizer", "stop")

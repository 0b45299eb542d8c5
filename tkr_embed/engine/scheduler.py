"""Continuous batching: which tokens of which sequences the next step computes (no torch here)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from tkr_embed.engine.block_manager import BlockManager
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.constraints import ConstraintState, PendingMask, advance_states
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.runner import BatchEntry, PromptLogprobs, SampledToken, ScheduledBatch
from tkr_embed.engine.sequence import Request, Sequence, SequenceStatus


@dataclass
class SchedulerCounters:
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    prompt_tokens_prefilled: int = 0
    tokens_decoded: int = 0
    requests_finished: int = 0
    preemptions: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)  # completions finished, by FinishReason value

    def count_finish(self, reason: FinishReason) -> None:
        self.finish_reasons[reason.value] = self.finish_reasons.get(reason.value, 0) + 1


class Scheduler:
    """Waiting and running queues; every step mixes decodes with prefill chunks under a token budget.

    Policy: running sequences first (decodes, then unfinished prefill chunks), oldest first; then
    waiting ones in FIFO order while the token budget, `max_num_seqs` and free blocks allow. The budget
    is `max_num_batched_tokens`, or `max_num_batched_tokens_idle` for a step without decodes. When a
    running sequence needs a block and none is free, the newest running sequence is preempted: its
    blocks are freed and it goes back to the front of the waiting queue to be recomputed later.
    Sibling completions (n > 1) wait until the first one has prefilled the prompt, then share its
    full prompt blocks. A request that asks for prompt logprobs computes its whole prompt (no cached
    prefix), as the cached positions' logits were never kept.
    """

    def __init__(
        self,
        config: EngineConfig,
        block_manager: BlockManager,
        eos_token_ids: tuple[int, ...],
        max_model_len: int,
    ) -> None:
        self.config = config
        self.block_manager = block_manager
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.counters = SchedulerCounters()
        self._seqs: dict[int, Sequence] = {}  # every unfinished sequence by id
        self._pending_forks: dict[int, list[Sequence]] = {}  # first completion's id -> its siblings
        self._released_seq_ids: list[int] = []

    def has_unfinished(self) -> bool:
        return bool(self._seqs)

    def add_request(self, request: Request) -> None:
        leader, *siblings = request.seqs
        for seq in request.seqs:
            self._seqs[seq.seq_id] = seq
        if siblings:
            self._pending_forks[leader.seq_id] = siblings
        self.waiting.append(leader)

    def take_released_seq_ids(self) -> list[int]:
        """Ids of sequences that finished or were aborted since the last call."""
        released, self._released_seq_ids = self._released_seq_ids, []
        return released

    # --- scheduling ---------------------------------------------------------------------------

    def schedule(self) -> ScheduledBatch:
        chunks: list[tuple[Sequence, int]] = []
        scheduled_ids: set[int] = set()
        preempted = False
        decodes = [s for s in self.running if s.num_tokens - s.num_computed_tokens == 1]
        prefills = [s for s in self.running if s.num_tokens - s.num_computed_tokens > 1]
        # no stream waits for its next token on this step: it may be as large as the idle budget allows
        budget = self.config.max_num_batched_tokens if decodes else self.config.largest_step_tokens
        for seq in decodes + prefills:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.can_append(seq, num_new):
                victim = self._newest_running(exclude=scheduled_ids | {seq.seq_id})
                preempted = True
                self._preempt(victim or seq)
                if victim is None:
                    break
            else:
                self.block_manager.append_slots(seq, num_new)
                chunks.append((seq, num_new))
                scheduled_ids.add(seq.seq_id)
                budget -= num_new
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            num_new = self._admit_tokens(seq, budget)
            if num_new is None:
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            self.block_manager.append_slots(seq, num_new)
            chunks.append((seq, num_new))
            budget -= num_new
        return ScheduledBatch([self._entry(seq, num_new) for seq, num_new in chunks])

    def lookahead(self, batch: ScheduledBatch, penalties: bool = False) -> ScheduledBatch | None:
        """The decode step after `batch`, scheduled while `batch` still runs: the same sequences, one
        position on, their input tokens left to the runner (it takes `batch`'s samples on the device).

        Only for a batch of every running sequence, each decoding one token with sampling that needs
        no history on the host (no seed; no penalties unless `penalties`: the runner keeps the histories they
        read, `ModelRunner.follows_penalties`), nothing that could be admitted waiting (the
        queue may be full while `max_num_seqs` sequences run), and free blocks for all. A sequence whose
        constraint may restrict the lookahead's token gets a PendingMask, which the runner resolves only once
        `batch`'s token was postprocessed (`ModelRunner.launch`). A sequence that finishes with `batch`'s
        token computes one token for nothing; its blocks may be freed before that step ends, but the KV it
        writes lies past its computed tokens (in no full, shareable block) and every later step runs after it
        on the device.
        None when the batch does not qualify.
        """
        admissible = self.waiting and len(self.running) < self.config.max_num_seqs
        if admissible or self._pending_forks or len(batch.entries) != len(self.running):
            return None
        seqs = []
        blocks_needed = 0
        for entry in batch.entries:
            seq = self._seqs.get(entry.seq_id)
            if (
                seq is None
                or seq.status is not SequenceStatus.RUNNING
                or not entry.sample
                or len(entry.token_ids) != 1
                or seq.num_computed_tokens != entry.start_pos
                or entry.start_pos + 2 > self.max_model_len
            ):
                return None
            params = seq.sampling
            if params.seed is not None or (params.is_penalised and not penalties):
                return None
            blocks_needed += self.block_manager.num_blocks_needed(seq, 2)
            seqs.append(seq)
        if blocks_needed > self.block_manager.num_free_blocks:
            return None
        entries = []
        for seq in seqs:
            self.block_manager.append_slots(seq, 2)  # this step's slot and the next one's
            entries.append(
                BatchEntry(
                    seq_id=seq.seq_id,
                    token_ids=[0],
                    start_pos=seq.num_computed_tokens + 1,
                    block_table=list(seq.block_table),
                    sample=True,
                    sampling=seq.sampling,
                    # free for this step's token and the lookahead's, whatever they are: no mask
                    allowed_tokens=PendingMask(seq.constraint_state) if seq.free_tokens_ahead() < 2 else None,
                    history_on_host=False,
                )
            )
        return ScheduledBatch(entries)

    def _admit_tokens(self, seq: Sequence, budget: int) -> int | None:
        """Give a waiting sequence its cached prefix; the size of its first chunk, or None if no room."""
        fresh = not seq.block_table
        num_cached = 0
        reuse_prefix = not seq.wants_prompt_logprobs
        if fresh:
            num_cached = self.block_manager.allocate(seq, reuse_prefix)
        num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
        if not self.block_manager.can_append(seq, num_new):
            if fresh:
                self.block_manager.free(seq)
            return None
        request = seq.request
        if request.timings.scheduled is None:  # first admission of the request
            request.timings.scheduled = time.monotonic()
            request.num_cached_prompt_tokens = num_cached
            if reuse_prefix:  # the prefix cache was looked up
                self.counters.prefix_cache_queries += seq.num_prompt_tokens
                self.counters.prefix_cache_hits += request.num_cached_prompt_tokens
        return num_new

    def _entry(self, seq: Sequence, num_new: int) -> BatchEntry:
        start = seq.num_computed_tokens
        # max_tokens=0: the prompt is computed (and scored) but nothing is sampled
        sample = start + num_new == seq.num_tokens and seq.sampling.max_tokens != 0
        scores_prompt = seq.wants_prompt_logprobs and start < seq.num_prompt_tokens - 1
        params = seq.sampling
        reads_prompt = sample and params.repetition_penalty != 1.0  # the repetition penalty reads the prompt too
        # only penalties and a seeded draw read the output so far: a copy for every row would cost O(output) a row
        needs_output = sample and (params.seed is not None or params.is_penalised)
        return BatchEntry(
            seq_id=seq.seq_id,
            token_ids=seq.all_token_ids[start : start + num_new],
            start_pos=start,
            block_table=list(seq.block_table),
            sample=sample,
            sampling=seq.sampling if sample else None,
            prompt_token_ids=seq.prompt_tuple if reads_prompt or scores_prompt else (),
            output_token_ids=tuple(seq.output_token_ids) if needs_output else (),
            allowed_tokens=seq.pending_mask() if sample else None,
            prompt_logprobs=seq.sampling.prompt_logprobs if scores_prompt else None,
        )

    def _newest_running(self, exclude: set[int]) -> Sequence | None:
        for seq in reversed(self.running):
            if seq.seq_id not in exclude:
                return seq
        return None

    def _preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks; it will be recomputed from its tokens later."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.counters.preemptions += 1

    # --- after the step -----------------------------------------------------------------------

    def advance_constraints(self, batch: ScheduledBatch, sampled: list[SampledToken | PromptLogprobs]) -> None:
        """Let the constraint states of the batch's running sequences take their sampled tokens now, all in one
        `advance_states` call (a grammar engine takes them in parallel), ahead of the rest of `postprocess` (which
        then does not give them again)."""
        ahead: list[Sequence] = []
        pairs: list[tuple[ConstraintState, int]] = []
        for token in sampled:
            seq = self._seqs.get(token.seq_id) if isinstance(token, SampledToken) else None
            if seq is None or seq.status is not SequenceStatus.RUNNING:
                continue
            pair = seq.constraint_advance(token.token_id)
            if pair is not None:
                pairs.append(pair)
                ahead.append(seq)
        advance_states(pairs)
        for seq in ahead:
            seq.mark_constraint_ahead()

    def postprocess(self, batch: ScheduledBatch, sampled: list[SampledToken | PromptLogprobs]) -> list[Request]:
        """Account the computed tokens, keep prompt scores, append sampled tokens, finish sequences; the
        updated requests."""
        sampled_by_seq = {token.seq_id: token for token in sampled if isinstance(token, SampledToken)}
        scored_by_seq = {scored.seq_id: scored for scored in sampled if isinstance(scored, PromptLogprobs)}
        updated: dict[str, Request] = {}
        now = time.monotonic()
        for entry in batch.entries:
            seq = self._seqs.get(entry.seq_id)
            if seq is None or seq.status is not SequenceStatus.RUNNING:
                continue  # aborted while the step ran
            start, num_new = entry.start_pos, len(entry.token_ids)
            self.counters.prompt_tokens_prefilled += max(0, min(seq.num_prompt_tokens, start + num_new) - start)
            seq.num_computed_tokens = start + num_new
            self.block_manager.commit(seq)
            request = seq.request
            if entry.prompt_logprobs is not None:
                request.record_prompt_logprobs(scored_by_seq[seq.seq_id])
            if seq.wants_prompt_logprobs and seq.num_computed_tokens >= seq.num_prompt_tokens:
                request.finish_prompt_scoring()
            if entry.sample:
                if request.timings.first_token is None:
                    request.timings.first_token = now
                self._fork_siblings(seq)
                seq.append_token(sampled_by_seq[seq.seq_id], self.eos_token_ids, self.max_model_len)
                self.counters.tokens_decoded += 1
            elif seq.sampling.max_tokens == 0 and seq.num_computed_tokens == seq.num_tokens:
                self._fork_siblings(seq)  # each sibling computes its last prompt token, then ends the same way
                seq.finish(FinishReason.LENGTH)
            else:
                continue
            updated[request.request_id] = request
            if seq.is_finished:
                self.counters.count_finish(seq.finish_reason)
                self._release(seq)
                self.running.remove(seq)
                if request.is_finished:
                    request.timings.finished = now
                    self.counters.requests_finished += 1
        return list(updated.values())

    def _fork_siblings(self, leader: Sequence) -> None:
        siblings = self._pending_forks.pop(leader.seq_id, None)
        if not siblings:
            return
        for sibling in reversed(siblings):
            self.block_manager.fork(leader, sibling)
            self.waiting.appendleft(sibling)

    # --- abort --------------------------------------------------------------------------------

    def abort_request(self, request: Request) -> None:
        """Finish every unfinished sequence of the request and free all its blocks."""
        for seq in request.seqs:
            if seq.is_finished:
                continue
            if seq in self.waiting:
                self.waiting.remove(seq)
            if seq in self.running:
                self.running.remove(seq)
            self._pending_forks.pop(seq.seq_id, None)
            seq.finish(FinishReason.ABORT)
            self.counters.count_finish(FinishReason.ABORT)
            self._release(seq)
        request.timings.finished = time.monotonic()

    def _release(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        self._seqs.pop(seq.seq_id, None)
        self._released_seq_ids.append(seq.seq_id)

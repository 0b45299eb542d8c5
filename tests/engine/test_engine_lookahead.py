"""Lookahead: the next decode step is launched before this one's tokens are read (a runner that can_follow).

FollowingToyRunner computes at launch, in launch order, as a device queue would, and checks every
context it reads back from its KV slots: a block freed or reused too early, or a wrong position,
changes the tokens or raises. Every result must equal the ordinary engine's, token for token.
"""

from __future__ import annotations

import asyncio

from engine_fakes import FollowingToyRunner, ToyRunner, ToyTokenizer, run_all
from test_engine_scheduling import prompts

from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.runner import ScheduledBatch
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, CallerPort, Inbox, StepLoop

EOS_LOGIT = 5.0  # greedy picks EOS wherever every other logit is lower: sequences end at unforeseen steps


def _requests(count: int) -> dict:
    """EOS allowed (sequences end at steps nobody can foresee), lengths and limits that differ."""
    out = {}
    for i, prompt in enumerate(prompts(count, seed=11)):
        params = SamplingParams(max_tokens=5 + 7 * (i % 4), temperature=0.0)
        out[f"r{i}"] = (prompt, params)
    return out


def _tokens(finals) -> dict:
    return {rid: (o.outputs[0].token_ids, o.outputs[0].finish_reason) for rid, o in finals.items()}


def test_lookahead_gives_the_tokens_of_the_ordinary_engine() -> None:
    requests = _requests(12)
    ordinary = run_all(
        LLMEngine(ToyRunner(eos_logit=EOS_LOGIT), ToyTokenizer(), EngineConfig(max_num_batched_tokens=64)), requests
    )
    runner = FollowingToyRunner(num_kv_blocks=64, eos_logit=EOS_LOGIT)  # few blocks: freed ones are soon reused
    engine = LLMEngine(runner, ToyTokenizer(), EngineConfig(max_num_batched_tokens=64))
    ahead = run_all(engine, requests)
    assert _tokens(ahead) == _tokens(ordinary)
    assert {reason for _, reason in _tokens(ahead).values()} == {FinishReason.STOP, FinishReason.LENGTH}
    assert runner.followed > 10  # the decode steps after the prefills: ahead
    assert engine.stats().kv_blocks_used == 0 and not engine.has_unfinished_requests()


def test_lookahead_continues_while_the_queue_waits_for_a_full_batch() -> None:
    """max_num_seqs sequences running and more waiting: nothing can be admitted, so decode steps go
    ahead; a finished sequence's slot is filled at the next ordinary step. Same tokens as the ordinary
    engine."""
    requests = _requests(8)
    ordinary = run_all(
        LLMEngine(ToyRunner(eos_logit=EOS_LOGIT), ToyTokenizer(), EngineConfig(max_num_seqs=3)), requests
    )
    runner = FollowingToyRunner(num_kv_blocks=64, eos_logit=EOS_LOGIT)
    engine = LLMEngine(runner, ToyTokenizer(), EngineConfig(max_num_seqs=3))
    assert _tokens(run_all(engine, requests)) == _tokens(ordinary)
    assert runner.followed >= 30  # 34; 23 if a waiting queue stopped lookahead (deterministic toy)
    assert engine.stats().kv_blocks_used == 0


def test_no_lookahead_when_turned_off_or_when_sampling_needs_the_host() -> None:
    runner = FollowingToyRunner()
    run_all(LLMEngine(runner, ToyTokenizer(), EngineConfig(lookahead=False)), _requests(4))
    assert runner.followed == 0
    for params in (
        SamplingParams(max_tokens=12, temperature=0.8, seed=5),
        SamplingParams(max_tokens=12, temperature=0.0, repetition_penalty=1.3),
    ):
        runner = FollowingToyRunner()
        engine = LLMEngine(runner, ToyTokenizer(), EngineConfig())
        finals = run_all(engine, {"a": ([1, 2, 3], params)})
        assert runner.followed == 0
        assert (
            finals["a"].outputs[0].token_ids
            == run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": ([1, 2, 3], params)})["a"]
            .outputs[0]
            .token_ids
        )


class _KeepsHistories(FollowingToyRunner):
    follows_penalties = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.histories_on_host: set[bool] = set()  # what the followed steps' entries said

    def launch(self, batch: ScheduledBatch, previous=None):
        if previous is not None:
            self.histories_on_host |= {e.history_on_host for e in batch.entries}
        return super().launch(batch, previous)


def test_a_runner_that_keeps_penalty_histories_follows_penalised_batches_never_seeded_ones() -> None:
    penalised = SamplingParams(max_tokens=12, temperature=0.0, repetition_penalty=1.3)
    runner = _KeepsHistories()
    run_all(LLMEngine(runner, ToyTokenizer(), EngineConfig()), {"a": ([1, 2, 3], penalised)})
    assert runner.followed >= 8 and runner.histories_on_host == {False}
    runner = _KeepsHistories()
    run_all(
        LLMEngine(runner, ToyTokenizer(), EngineConfig()), {"a": ([1, 2, 3], SamplingParams(max_tokens=12, seed=5))}
    )
    assert runner.followed == 0


class _LateArrivalPort(CallerPort):
    """Hands the engine `late` only at the loop's `arrives_at`-th look for new requests."""

    def __init__(self, engine: LLMEngine, first: AddRequest, late: AddRequest, arrives_at: int, finals: dict) -> None:
        super().__init__(engine, [first], self._collect)
        self.late, self.arrives_at, self.looks, self.finals = late, arrives_at, 0, finals

    def _collect(self, output) -> None:
        if output.finished:
            self.finals[output.request_id] = output

    def take(self) -> Inbox:
        self.looks += 1
        inbox = super().take()
        if self.looks == self.arrives_at:
            inbox.add(self.late)
        return inbox

    def stopping(self) -> bool:
        return self.looks >= self.arrives_at and super().stopping()


def test_a_request_arriving_during_lookahead_is_admitted_and_served_alike() -> None:
    runner = FollowingToyRunner()
    engine = LLMEngine(runner, ToyTokenizer(), EngineConfig())
    long = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    finals: dict = {}
    port = _LateArrivalPort(
        engine,
        AddRequest("first", [5, 6, 7], long, 0.0),
        AddRequest("second", [9, 9, 9, 9], long, 0.0),
        arrives_at=5,
        finals=finals,
    )
    StepLoop(engine, port).run()
    expected = run_all(
        LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()),
        {"first": ([5, 6, 7], long), "second": ([9, 9, 9, 9], long)},
    )
    assert _tokens(finals) == _tokens(expected)
    assert runner.followed > 20


async def test_async_engine_streams_with_lookahead_and_abort_frees_everything() -> None:
    runner = FollowingToyRunner(step_delay_s=0.001)
    engine = AsyncEngine.from_runner(runner, ToyTokenizer(), EngineConfig())
    requests = _requests(6)

    async def collect(request_id: str):
        outputs = [output async for output in engine.generate(request_id, *requests[request_id])]
        return request_id, (outputs[-1].outputs[0].token_ids, outputs[-1].outputs[0].finish_reason)

    aborted = engine.generate("long", [1, 2, 3], SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True))
    await aborted.__anext__()
    together = dict(await asyncio.gather(*(collect(rid) for rid in requests)))
    await engine.abort("long")
    outputs = [o async for o in aborted]
    assert outputs[-1].outputs[0].finish_reason is FinishReason.ABORT
    ordinary = run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), requests)
    assert together == _tokens(ordinary)
    assert runner.followed > 20
    for _ in range(500):
        stats = engine.stats()
        if stats.running == 0 and stats.kv_blocks_used == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.stats().kv_blocks_used == 0
    await engine.shutdown()

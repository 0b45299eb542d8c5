"""The synchronous engine over a toy runner with a real paged slot cache."""

from __future__ import annotations

import dataclasses
import random

import pytest
from engine_fakes import EOS_ID, ToyRunner, ToyTokenizer, run_all, step

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import ConfigurationError, EngineOverloadedError, InvalidRequestError
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason, RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)


def make_engine(runner: ToyRunner | None = None, **config) -> LLMEngine:
    return LLMEngine(runner or ToyRunner(), ToyTokenizer(), EngineConfig(**config))


def run_alone(prompt: list[int], params: SamplingParams, **config) -> RequestOutput:
    return run_all(make_engine(**config), {"alone": (prompt, params)})["alone"]


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(60) for _ in range(rng.randrange(3, 30))] for _ in range(count)]


def test_batch_of_16_equals_each_alone_greedy() -> None:
    batch_prompts = prompts(16)
    engine = make_engine(max_num_batched_tokens=64)  # forces chunked prefill next to decodes
    finals = run_all(engine, {f"r{i}": (p, GREEDY) for i, p in enumerate(batch_prompts)})
    for i, prompt in enumerate(batch_prompts):
        alone = run_alone(prompt, GREEDY)
        assert finals[f"r{i}"].outputs[0].token_ids == alone.outputs[0].token_ids
        assert len(alone.outputs[0].token_ids) == 8
    assert engine.stats().kv_blocks_used == 0


def test_prefix_cache_prefills_only_the_new_part() -> None:
    shared = prompts(1, seed=3)[0] + prompts(1, seed=4)[0] + list(range(20))  # > 40 tokens
    first = shared + [1, 2]
    second = shared + [7, 8, 9]
    engine = make_engine()
    run_all(engine, {"first": (first, GREEDY)})
    before = engine.stats().prompt_tokens_prefilled
    out = run_all(engine, {"second": (second, GREEDY)})["second"]
    cached = len(shared) // 4 * 4  # block_size 4: full shared blocks
    assert out.num_cached_prompt_tokens == cached
    assert engine.stats().prompt_tokens_prefilled - before == len(second) - cached
    assert out.outputs[0].token_ids == run_alone(second, GREEDY, enable_prefix_caching=False).outputs[0].token_ids
    assert engine.stats().prefix_cache_hits == cached


def test_preemption_under_tiny_kv_budget_keeps_outputs() -> None:
    batch_prompts = prompts(8, seed=5)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    engine = make_engine(ToyRunner(num_kv_blocks=16), enable_prefix_caching=False)  # 64 token slots
    finals = run_all(engine, {f"r{i}": (p, params) for i, p in enumerate(batch_prompts)})
    assert engine.stats().preemptions > 0
    for i, prompt in enumerate(batch_prompts):
        assert finals[f"r{i}"].outputs[0].token_ids == run_alone(prompt, params).outputs[0].token_ids
    assert engine.block_manager.num_free_blocks == 16


def test_preemption_with_prefix_caching_keeps_outputs() -> None:
    batch_prompts = prompts(6, seed=6)
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    engine = make_engine(ToyRunner(num_kv_blocks=14))
    finals = run_all(engine, {f"r{i}": (p, params) for i, p in enumerate(batch_prompts)})
    assert engine.stats().preemptions > 0
    for i, prompt in enumerate(batch_prompts):
        assert finals[f"r{i}"].outputs[0].token_ids == run_alone(prompt, params).outputs[0].token_ids


def test_preemption_takes_the_newest_request_and_requeues_it_first() -> None:
    # 6 blocks of 4 slots; each request needs 4 + 16 = 20 slots (5 blocks), so the three cannot all fit:
    # c and then b are preempted while a runs. Policy a user feels: the oldest request never stalls, and
    # preempted requests resume in arrival order (b, which had generated more, before c).
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    engine = make_engine(ToyRunner(num_kv_blocks=6), enable_prefix_caching=False)
    for request_id, prompt in zip("abc", prompts(3, seed=9), strict=True):
        engine.add_request(request_id, prompt[:4], params)
    steps: list[set[str]] = []
    finished: list[str] = []
    while engine.has_unfinished_requests():
        outputs = step(engine)
        steps.append({output.request_id for output in outputs})
        finished += [output.request_id for output in outputs if output.finished]
    assert engine.stats().preemptions > 0
    assert all("a" in got for got in steps[:16]), steps[:16]  # one token a step, never preempted
    assert "a" not in set().union(*steps[16:])
    assert finished == ["a", "b", "c"]
    assert engine.block_manager.num_free_blocks == 6


def test_abort_returns_every_block_and_1000_cycles_leave_pool_full() -> None:
    runner = ToyRunner(num_kv_blocks=32)
    engine = make_engine(runner)
    rng = random.Random(0)
    for cycle in range(1000):
        engine.add_request(f"c{cycle}", [rng.randrange(60) for _ in range(rng.randrange(1, 12))], GREEDY)
        for _ in range(rng.randrange(0, 3)):
            step(engine)
        final = engine.abort_request(f"c{cycle}")
        if final is not None:  # None: it had already finished
            assert final.finished and final.outputs[0].finish_reason is FinishReason.ABORT
        assert engine.block_manager.num_free_blocks == 32
    assert not engine.has_unfinished_requests()
    stats = engine.stats()
    assert stats.kv_blocks_used == 0 and stats.running == 0 and stats.waiting == 0
    assert len(set(runner.released)) == 1000


def test_abort_mid_generation_keeps_others_intact() -> None:
    engine = make_engine()
    a, b = prompts(2, seed=8)
    engine.add_request("a", a, GREEDY)
    engine.add_request("b", b, GREEDY)
    step(engine)
    step(engine)
    aborted = engine.abort_request("a")
    assert aborted.outputs[0].finish_reason is FinishReason.ABORT
    finals = run_all(engine, {})
    assert finals["b"].outputs[0].token_ids == run_alone(b, GREEDY).outputs[0].token_ids
    assert engine.block_manager.num_used_blocks == 0


def test_seeded_sampling_reproduces_whatever_the_batch() -> None:
    prompt = prompts(1, seed=9)[0]
    seeded = SamplingParams(max_tokens=12, temperature=1.0, seed=1234, ignore_eos=True)
    alone = run_alone(prompt, seeded).outputs[0].token_ids
    others = {
        f"o{i}": (p, SamplingParams(max_tokens=12, temperature=1.0, ignore_eos=True)) for i, p in enumerate(prompts(5))
    }
    together = run_all(make_engine(), {"seeded": (prompt, seeded), **others})["seeded"].outputs[0].token_ids
    assert together == alone
    other_seed = run_alone(prompt, SamplingParams(max_tokens=12, temperature=1.0, seed=99, ignore_eos=True))
    assert other_seed.outputs[0].token_ids != alone


def test_n_completions_share_prompt_blocks_and_differ() -> None:
    prompt = prompts(1, seed=10)[0] + list(range(16))
    params = SamplingParams(n=3, max_tokens=10, temperature=1.0, seed=7, ignore_eos=True)
    engine = make_engine(enable_prefix_caching=False)
    out = run_all(engine, {"n": (prompt, params)})["n"]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 10 for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) == 3
    # siblings recompute only the tail after the shared full blocks
    tail = len(prompt) - (len(prompt) - 1) // 4 * 4
    assert engine.stats().prompt_tokens_prefilled == len(prompt) + 2 * tail
    # completion i reproduces with seed + i
    again = run_all(make_engine(), {"n": (prompt, params)})["n"]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]
    single = SamplingParams(max_tokens=10, temperature=1.0, seed=8, ignore_eos=True)
    assert run_alone(prompt, single).outputs[0].token_ids == out.outputs[1].token_ids


def test_waiting_queue_limit_raises_overloaded() -> None:
    engine = make_engine(max_waiting=2)
    engine.add_request("a", [1, 2], GREEDY)
    engine.add_request("b", [1, 2], GREEDY)
    with pytest.raises(EngineOverloadedError):
        engine.add_request("c", [1, 2], GREEDY)
    step(engine)  # both admitted: room again
    engine.add_request("c", [1, 2], GREEDY)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "param"),
    [([], 4, "prompt"), (list(range(40)) * 2, 4, "prompt"), ([1, 2, 3], 60, "max_tokens"), ([1, 64], 4, "prompt")],
)
def test_unservable_requests_are_rejected_naming_the_field(prompt: list[int], max_tokens: int, param: str) -> None:
    engine = make_engine(ToyRunner(max_model_len=48))
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request("x", prompt, SamplingParams(max_tokens=max_tokens))
    assert info.value.param == param
    assert not engine.has_unfinished_requests()


def test_max_tokens_none_runs_to_the_context_end() -> None:
    engine = make_engine(ToyRunner(max_model_len=24))
    out = run_all(engine, {"x": (list(range(10)), SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True))})[
        "x"
    ]
    assert len(out.outputs[0].token_ids) == 14
    assert out.outputs[0].finish_reason is FinishReason.LENGTH


def test_eos_stops_unless_ignored_and_stop_token_ids_stop() -> None:
    eos = run_all(
        make_engine(ToyRunner(eos_logit=100.0)), {"x": ([1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0))}
    )["x"]
    assert eos.outputs[0].token_ids == [EOS_ID]
    assert eos.outputs[0].finish_reason is FinishReason.STOP and eos.outputs[0].text == ""
    ignored = run_all(
        make_engine(ToyRunner(eos_logit=100.0)),
        {"x": ([1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))},
    )["x"]
    assert ignored.outputs[0].token_ids == [EOS_ID] * 5
    assert ignored.outputs[0].finish_reason is FinishReason.LENGTH
    plain = run_alone([1, 2, 3], GREEDY).outputs[0].token_ids
    stop_id = plain[2]
    stopped = run_alone([1, 2, 3], SamplingParams(max_tokens=8, temperature=0.0, stop_token_ids=[stop_id])).outputs[0]
    first = plain.index(stop_id)
    assert stopped.token_ids == plain[: first + 1]
    assert stopped.finish_reason is FinishReason.STOP and stopped.stop_reason == stop_id


def test_stop_string_never_reaches_the_stream() -> None:
    tokenizer = ToyTokenizer()
    prompt = prompts(1, seed=11)[0]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    full_text = run_alone(prompt, params).outputs[0].text
    stop = full_text[5:8]
    assert len(stop) == 3
    engine = make_engine()
    engine.add_request("s", prompt, SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, stop=[stop]))
    streamed, final = "", None
    while engine.has_unfinished_requests():
        for output in step(engine):
            streamed += output.outputs[0].new_text
            assert stop not in streamed
            final = output
    completion = final.outputs[0]
    assert completion.finish_reason is FinishReason.STOP and completion.stop_reason == stop
    assert completion.text == streamed == full_text[: full_text.index(stop)]
    assert tokenizer.decode(completion.token_ids).startswith(completion.text + stop)


def test_timings_and_counts_are_filled() -> None:
    out = run_alone([1, 2, 3, 4, 5], GREEDY)
    timings = out.timings
    assert timings.arrival <= timings.scheduled <= timings.first_token <= timings.finished
    assert out.num_prompt_tokens == 5 and out.num_completion_tokens == 8


def test_a_step_without_decodes_takes_the_idle_budget_and_one_beside_decodes_does_not() -> None:
    """An idle engine given four 40-token prompts prefills them in one 160-token step (max_num_batched_tokens_idle);
    once they decode, a fifth prompt joins at most max_num_batched_tokens - 4 tokens a step, beside the decodes."""
    runner = ToyRunner(num_kv_blocks=256)
    engine = make_engine(runner, max_num_batched_tokens=64, max_num_batched_tokens_idle=160)
    assert engine.config.largest_step_tokens == 160
    rng = random.Random(9)
    for i in range(4):
        engine.add_request(f"r{i}", [rng.randrange(60) for _ in range(40)], GREEDY)
    step(engine)
    assert [len(e.token_ids) for e in runner.batches[0].entries] == [40, 40, 40, 40]
    engine.add_request("late", [rng.randrange(60) for _ in range(100)], GREEDY)
    step(engine)
    assert [len(e.token_ids) for e in runner.batches[-1].entries] == [1, 1, 1, 1, 60]
    finals = run_all(engine, {})
    assert set(finals) == {"r0", "r1", "r2", "r3", "late"}
    assert max(sum(len(e.token_ids) for e in b.entries) for b in runner.batches[1:]) == 64
    # without the idle budget the first step takes 64 of the 160 prompt tokens
    plain = ToyRunner(num_kv_blocks=256)
    run_all(
        make_engine(plain, max_num_batched_tokens=64),
        {f"r{i}": ([rng.randrange(60) for _ in range(40)], GREEDY) for i in range(4)},
    )
    assert [len(e.token_ids) for e in plain.batches[0].entries] == [40, 24]
    with pytest.raises(ConfigurationError, match="max_num_batched_tokens_idle") as refused:
        EngineConfig(max_num_batched_tokens_idle=0)
    assert not isinstance(refused.value, InvalidRequestError)  # a start-up error, never a request's 400


def test_the_idle_budget_shrinks_to_the_step_the_runner_left_room_for() -> None:
    """A runner that left memory for 100-token steps only (RunnerInfo.max_step_tokens) gets no larger idle steps."""
    config = EngineConfig(max_num_batched_tokens=64, max_num_batched_tokens_idle=160)
    assert config.within(None) is config and config.within(160) is config
    assert config.within(100).max_num_batched_tokens_idle == 100
    assert config.within(64).max_num_batched_tokens_idle is None and config.within(64).largest_step_tokens == 64
    runner = ToyRunner(num_kv_blocks=256)
    runner._info = dataclasses.replace(runner.info, max_step_tokens=100)
    engine = make_engine(runner, max_num_batched_tokens=64, max_num_batched_tokens_idle=160)
    assert engine.config.largest_step_tokens == 100
    run_all(engine, {f"r{i}": ([i] * 40, GREEDY) for i in range(4)})
    assert sum(len(e.token_ids) for e in runner.batches[0].entries) == 100

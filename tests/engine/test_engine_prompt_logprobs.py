"""Prompt logprobs and max_tokens=0 through the engine, over the toy runner (whose logits are known)."""

from __future__ import annotations

import random
import time

import pytest
import torch
from engine_fakes import ToyRunner, ToyTokenizer, run_all, toy_logits

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.errors import InvalidRequestError
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import FinishReason, RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, run_to_completion

SCORE = SamplingParams(max_tokens=0, prompt_logprobs=3)


def make_engine(runner: ToyRunner | None = None, **config) -> LLMEngine:
    return LLMEngine(runner or ToyRunner(), ToyTokenizer(), EngineConfig(**config))


def prompt(length: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(60) for _ in range(length)]


def updates_of(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict[str, list]:
    """Every update each request streamed, in order."""
    updates: dict[str, list[RequestOutput]] = {request_id: [] for request_id in requests}
    adds = [AddRequest(request_id, p, params, time.monotonic()) for request_id, (p, params) in requests.items()]
    run_to_completion(engine, adds, lambda output: updates[output.request_id].append(output))
    return updates


def scores(output: RequestOutput) -> list[tuple[int, float, list[int]]]:
    return [(lp.token_id, lp.logprob, [t for t, _ in lp.top_logprobs]) for lp in output.prompt_logprobs[1:]]


def test_each_prompt_token_is_scored_by_the_logits_of_the_tokens_before_it() -> None:
    tokens = prompt(23, seed=1)
    output = run_all(make_engine(), {"r": (tokens, SCORE)})["r"]
    assert len(output.prompt_logprobs) == len(tokens) and output.prompt_logprobs[0] is None
    for pos in range(1, len(tokens)):
        expected = torch.log_softmax(toy_logits(tokens[:pos]), -1)
        scored = output.prompt_logprobs[pos]
        assert scored.token_id == tokens[pos]
        assert scored.logprob == pytest.approx(float(expected[tokens[pos]]), abs=1e-6)
        top = expected.topk(3)
        assert [t for t, _ in scored.top_logprobs] == top.indices.tolist()
        assert [v for _, v in scored.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-6)


@pytest.mark.parametrize("budget", [1, 3, 4, 7])
def test_a_prompt_scored_in_chunks_equals_it_scored_at_once(budget: int) -> None:
    """Each chunk's last position scores the next chunk's first token (block size 4: chunks cross blocks)."""
    tokens = prompt(30, seed=2)
    whole = run_all(make_engine(), {"r": (tokens, SCORE)})["r"]
    chunked_engine = make_engine(max_num_batched_tokens=budget)
    chunked = run_all(chunked_engine, {"r": (tokens, SCORE)})["r"]
    assert max(len(e.token_ids) for b in chunked_engine.runner.batches for e in b.entries) <= budget
    assert scores(chunked) == scores(whole)


def test_scores_come_once_in_the_first_update_then_generation_goes_on() -> None:
    tokens = prompt(17, seed=3)
    params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True, prompt_logprobs=0)
    updates = updates_of(make_engine(max_num_batched_tokens=6), {"r": (tokens, params)})["r"]
    assert updates[0].prompt_logprobs is not None and updates[0].outputs[0].new_token_ids
    assert all(update.prompt_logprobs is None for update in updates[1:])
    assert all(lp.top_logprobs == [] for lp in updates[0].prompt_logprobs[1:])
    plain = run_all(make_engine(), {"r": (tokens, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))})
    assert updates[-1].outputs[0].token_ids == plain["r"].outputs[0].token_ids


def test_max_tokens_zero_ends_after_the_prompt_with_no_token() -> None:
    tokens = prompt(12, seed=4)
    engine = make_engine()
    requests = {
        "plain": (tokens, SamplingParams(max_tokens=0)),
        "n2": (tokens, SamplingParams(n=2, max_tokens=0, prompt_logprobs=1)),
    }
    updates = updates_of(engine, requests)
    for request_id in ("plain", "n2"):
        final = updates[request_id][-1]
        assert final.finished
        assert [(c.token_ids, c.text, c.finish_reason) for c in final.outputs] == [([], "", FinishReason.LENGTH)] * len(
            final.outputs
        )
    assert len(updates["n2"][-1].outputs) == 2
    assert updates["plain"][0].prompt_logprobs is None  # not asked for
    assert updates["n2"][0].prompt_logprobs[1].token_id == tokens[1]
    assert all(not e.sample for b in engine.runner.batches for e in b.entries)
    assert engine.stats().kv_blocks_used == 0 and not engine.has_unfinished_requests()


def test_a_one_token_prompt_has_nothing_to_score() -> None:
    engine = make_engine()
    output = run_all(engine, {"r": ([5], SCORE)})["r"]
    assert output.prompt_logprobs == [None]
    assert (output.outputs[0].token_ids, output.outputs[0].finish_reason) == ([], FinishReason.LENGTH)
    assert [e.prompt_logprobs for b in engine.runner.batches for e in b.entries] == [None]


def test_a_request_scoring_its_prompt_computes_it_all_and_still_publishes_its_blocks() -> None:
    tokens = prompt(26, seed=5)
    engine = make_engine()
    first = run_all(engine, {"first": (tokens, SCORE)})["first"]
    computed = engine.runner.num_tokens_computed
    again = run_all(engine, {"again": (tokens, SCORE)})["again"]
    assert again.num_cached_prompt_tokens == 0
    assert engine.runner.num_tokens_computed - computed == len(tokens)
    assert scores(again) == scores(first)
    plain = run_all(engine, {"plain": (tokens, SamplingParams(max_tokens=1, temperature=0.0))})["plain"]
    assert plain.num_cached_prompt_tokens == 24  # the scoring requests' full blocks (block size 4)


def test_preempted_scoring_requests_keep_exact_scores() -> None:
    batch = {
        f"r{i}": (prompt(20 + i, seed=10 + i), SamplingParams(max_tokens=6, prompt_logprobs=2, ignore_eos=True))
        for i in range(5)
    }
    engine = make_engine(ToyRunner(num_kv_blocks=12), max_num_batched_tokens=8)  # 48 slots for 5 sequences
    updates = updates_of(engine, batch)
    assert engine.stats().preemptions > 0
    for request_id, (tokens, params) in batch.items():
        alone = updates_of(make_engine(), {request_id: (tokens, params)})[request_id]
        carrying = [u for u in updates[request_id] if u.prompt_logprobs is not None]
        assert len(carrying) == 1
        assert scores(carrying[0]) == scores(alone[0])


@pytest.mark.parametrize("value", [-1, 21, 1.5, "2"])
def test_prompt_logprobs_out_of_range_is_refused(value) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        SamplingParams(prompt_logprobs=value)
    assert refused.value.param == "prompt_logprobs"


def test_max_tokens_may_be_zero_but_not_negative() -> None:
    assert SamplingParams(max_tokens=0).max_tokens == 0
    with pytest.raises(InvalidRequestError) as refused:
        SamplingParams(max_tokens=-1)
    assert refused.value.param == "max_tokens"

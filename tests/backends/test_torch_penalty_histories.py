"""Penalised sampling on the real runner: the histories kept on the device give the tokens the host's histories
give, with lookahead steps launched for penalised batches, through preemption, n > 1 and engines sharing a runner."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tkr_embed.backends.factory import create_runner
from tkr_embed.backends.torch.runner import TorchModelRunner
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.llm import LLM

torch.set_num_threads(2)
REPETITION = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, repetition_penalty=0.3)
COUNTED = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, frequency_penalty=-2.0, presence_penalty=-2.0)
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def runner(demo_model_dir: Path) -> TorchModelRunner:
    return create_runner(demo_model_dir, device="cpu", num_kv_blocks=96, block_size=8)


def make_llm(runner: TorchModelRunner, **engine_kwargs) -> LLM:
    return LLM.from_runner(runner, block_size=runner.info.block_size, **engine_kwargs)


def prompts(count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    # few distinct ids: the penalties have repeats to act on (below 1 and negative, they favour what was seen, which
    # the demo model would not otherwise repeat)
    return [[rng.randrange(1000, 1012) for _ in range(rng.randrange(6, 30))] for _ in range(count)]


def generate(llm: LLM, batch: list[list[int]], params: list[SamplingParams]) -> list[list[int]]:
    requests = [llm.engine.add_request(f"r{i}", p, s) for i, (p, s) in enumerate(zip(batch, params, strict=True))]
    del requests
    finals: dict[str, list[int]] = {}
    while llm.engine.has_unfinished_requests():
        planned = llm.engine.plan_step()
        assert planned is not None
        launched = llm.engine.launch(*planned)
        for output in llm.engine.postprocess(launched.batch, launched.finish()):
            if output.finished:
                finals[output.request_id] = output.outputs[0].token_ids
    return [finals[f"r{i}"] for i in range(len(batch))]


def test_penalised_batches_launch_ahead_and_sample_what_the_host_histories_give(runner, monkeypatch) -> None:
    batch = prompts(6, seed=1)
    params = [REPETITION, COUNTED, GREEDY, REPETITION, COUNTED, GREEDY]
    plain = make_llm(runner, lookahead=False).generate(batch, params)
    followed = []
    launch = TorchModelRunner.launch

    def spy(self, batch, previous=None):
        followed.append(previous is not None)
        return launch(self, batch, previous)

    monkeypatch.setattr(TorchModelRunner, "launch", spy)
    ahead = make_llm(runner).generate(batch, params)
    assert [r.token_ids for r in ahead] == [r.token_ids for r in plain]
    assert sum(followed) >= 10  # the penalised batch's decode steps went ahead
    unpenalised = make_llm(runner, lookahead=False).generate(batch, GREEDY)
    changed = [r.token_ids != u.token_ids for r, u in zip(plain, unpenalised, strict=True)]
    # each kind of penalty acted on a row of it; the greedy rows kept their tokens
    assert (changed[0] or changed[3]) and (changed[1] or changed[4]) and not (changed[2] or changed[5])


def test_preempted_penalised_sequences_keep_their_tokens(runner) -> None:
    batch = prompts(6, seed=2)
    params = [REPETITION, COUNTED] * 3
    llm = make_llm(runner, num_kv_blocks=10)  # 80 token slots for 6 sequences
    results = llm.generate(batch, params)
    assert llm.engine.stats().preemptions > 0
    for prompt, p, result in zip(batch, params, results, strict=True):
        assert result.token_ids == make_llm(runner, lookahead=False).generate([prompt], p)[0].token_ids


def test_n_completions_and_a_second_engine_on_the_runner_start_from_their_own_histories(runner) -> None:
    prompt = prompts(1, seed=3)[0]
    two = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, n=2, repetition_penalty=0.3)
    one = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, repetition_penalty=0.3)
    expected = make_llm(runner, lookahead=False).generate([prompt], one)[0].token_ids
    result = make_llm(runner).generate([prompt], two)[0]
    assert [c.token_ids for c in result.outputs] == [expected, expected]
    # An engine dropped mid-request leaves its sequences' histories behind; a new engine's sequences never
    # read them.
    abandoned = make_llm(runner)
    abandoned.engine.add_request("left", prompt, one)
    for _ in range(4):
        planned = abandoned.engine.plan_step()
        launched = abandoned.engine.launch(*planned)
        abandoned.engine.postprocess(launched.batch, launched.finish())
    assert make_llm(runner).generate([prompt], one)[0].token_ids == expected

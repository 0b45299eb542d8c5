"""Prompt logprobs on TorchModelRunner (demo checkpoint, CPU): against a full forward, chunked, cached, max_tokens=0."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from tkr_embed.backends.factory import create_runner
from tkr_embed.backends.torch.attention import build_attention_metadata
from tkr_embed.backends.torch.runner import TorchModelRunner
from tkr_embed.engine.outputs import FinishReason, TokenLogprob
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.llm import LLM

torch.set_num_threads(2)
BLOCK_SIZE = 8
ENGINE_BLOCKS = 64  # the engines' pool; the reference forwards write to the blocks past it
SCORE = SamplingParams(max_tokens=0, prompt_logprobs=3)


@pytest.fixture(scope="module")
def runner(demo_model_dir: Path) -> TorchModelRunner:
    return create_runner(demo_model_dir, device="cpu", num_kv_blocks=96, block_size=BLOCK_SIZE)


def make_llm(runner: TorchModelRunner, **engine_kwargs) -> LLM:
    return LLM.from_runner(runner, block_size=BLOCK_SIZE, num_kv_blocks=ENGINE_BLOCKS, **engine_kwargs)


def random_prompt(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, 50000) for _ in range(length)]


def full_forward_logprobs(runner: TorchModelRunner, prompt: list[int]) -> torch.Tensor:
    """log_softmax of the logits of every position of one forward over the whole prompt: [L, V]."""
    blocks = list(range(ENGINE_BLOCKS, ENGINE_BLOCKS + -(-len(prompt) // BLOCK_SIZE)))
    metadata = build_attention_metadata([(0, len(prompt), blocks)], BLOCK_SIZE, "cpu")
    with torch.inference_mode():
        hidden = runner.model(torch.tensor(prompt), torch.arange(len(prompt)), runner.kv_caches, metadata)
        return torch.log_softmax(runner.model.compute_logits(hidden), -1)


def assert_close_scores(ours: list[TokenLogprob | None], theirs: list[TokenLogprob | None], atol: float) -> None:
    assert ours[0] is None and theirs[0] is None and len(ours) == len(theirs)
    for mine, other in zip(ours[1:], theirs[1:], strict=True):
        assert mine.token_id == other.token_id
        assert mine.logprob == pytest.approx(other.logprob, abs=atol)
        assert [t for t, _ in mine.top_logprobs] == [t for t, _ in other.top_logprobs]
        assert [v for _, v in mine.top_logprobs] == pytest.approx([v for _, v in other.top_logprobs], abs=atol)


def test_prompt_logprobs_are_the_log_softmax_of_a_full_forward(runner: TorchModelRunner) -> None:
    prompt = random_prompt(37, seed=1)
    result = make_llm(runner).generate([prompt], SCORE)[0]
    reference = full_forward_logprobs(runner, prompt)  # [37, V]
    scores = result.prompt_logprobs
    assert len(scores) == len(prompt) and scores[0] is None
    assert [lp.token_id for lp in scores[1:]] == prompt[1:]
    for pos in range(1, len(prompt)):
        expected = reference[pos - 1]
        assert scores[pos].logprob == pytest.approx(float(expected[prompt[pos]]), abs=1e-4)
        assert [t for t, _ in scores[pos].top_logprobs] == expected.topk(3).indices.tolist()


def test_a_prompt_scored_in_chunks_equals_it_scored_at_once(runner: TorchModelRunner) -> None:
    prompt = random_prompt(29, seed=2)
    whole = make_llm(runner).generate([prompt], SCORE)[0]
    llm = make_llm(runner, max_num_batched_tokens=5)  # 6 chunks, the last chunk's edges inside blocks
    chunked = llm.generate([prompt], SCORE)[0]
    assert llm.engine.stats().steps >= 6
    assert_close_scores(chunked.prompt_logprobs, whole.prompt_logprobs, atol=1e-5)


def test_a_repeated_scoring_request_recomputes_its_prompt_and_scores_it_the_same(runner: TorchModelRunner) -> None:
    prompt = random_prompt(33, seed=3)
    llm = make_llm(runner)
    first = llm.generate([prompt], SCORE)[0]
    prefilled = llm.engine.stats().prompt_tokens_prefilled
    second = llm.generate([prompt], SCORE)[0]
    assert second.num_cached_prompt_tokens == 0
    assert llm.engine.stats().prompt_tokens_prefilled - prefilled == len(prompt)
    assert [(lp.token_id, lp.logprob, lp.top_logprobs) for lp in second.prompt_logprobs[1:]] == [
        (lp.token_id, lp.logprob, lp.top_logprobs) for lp in first.prompt_logprobs[1:]
    ]


def test_max_tokens_zero_generates_nothing_beside_requests_that_generate(runner: TorchModelRunner) -> None:
    prompts = [random_prompt(20, seed=4), random_prompt(12, seed=5)]
    greedy = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    llm = make_llm(runner)
    scored, generated = llm.generate(prompts, [SamplingParams(max_tokens=0), greedy])
    assert (scored.token_ids, scored.text, scored.finish_reason) == ([], "", FinishReason.LENGTH)
    assert scored.prompt_logprobs is None
    assert generated.token_ids == make_llm(runner).generate([prompts[1]], greedy)[0].token_ids
    assert llm.engine.stats().kv_blocks_used == 0

"""The real engine on the MLX runner: same tokens as the torch backend, prefix caching, seeds, logprobs,
constraints."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch

from tkr_embed import LLM, SamplingParams
from tkr_embed.backends.mlx.sampler import MlxSampler
from tkr_embed.engine.constraints import PendingMask
from tkr_embed.engine.outputs import FinishReason
from tkr_embed.engine.runner import BatchEntry
from tkr_embed.harmony.recipient_constraint import OneOfTokenSequences

torch.set_num_threads(2)
PROMPTS = [
    [200006, 17360, 200008, 3575, 553, 261],  # short
    list(range(1000, 1030)),  # longer than the 16-token window
    [9906, 11, 1495, 553, 481, 30, 15, 16, 17],
]


def _llm(model_dir: Path, device: str) -> LLM:
    return LLM(
        model_dir,
        device=device,
        dtype="float32",
        quantization="none" if device == "mlx" else "auto",
        num_kv_blocks=64,
        block_size=16,
        max_num_batched_tokens=32,
    )


@pytest.fixture(scope="module")
def mlx_llm(demo_model_dir: Path) -> LLM:
    return _llm(demo_model_dir, "mlx")


@pytest.fixture(scope="module")
def torch_llm(demo_model_dir: Path) -> LLM:
    return _llm(demo_model_dir, "cpu")


def test_greedy_generation_agrees_token_for_token(mlx_llm: LLM, torch_llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    ours = mlx_llm.generate(PROMPTS, params)
    reference = torch_llm.generate(PROMPTS, params)
    assert [r.token_ids for r in ours] == [r.token_ids for r in reference]
    assert all(len(r.token_ids) == 12 and r.finish_reason is FinishReason.LENGTH for r in ours)
    assert mlx_llm.engine.runner.info.device == "mlx:cpu"


def test_seeded_sampling_and_logprobs_agree_with_torch(mlx_llm: LLM, torch_llm: LLM) -> None:
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=8, ignore_eos=True, logprobs=2)
    ours = mlx_llm.generate(PROMPTS[:2], params)
    reference = torch_llm.generate(PROMPTS[:2], params)
    assert [r.token_ids for r in ours] == [r.token_ids for r in reference]
    for mine, theirs in zip(ours, reference, strict=False):
        for a, b in zip(mine.outputs[0].logprobs, theirs.outputs[0].logprobs, strict=True):
            assert a.token_id == b.token_id
            assert abs(a.logprob - b.logprob) <= 1e-4


def test_prefix_cache_hit_gives_the_same_answer(mlx_llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    prompt = list(range(2000, 2040))
    first = mlx_llm.generate(prompt, params)[0]
    second = mlx_llm.generate(prompt, params)[0]
    assert second.num_cached_prompt_tokens == 32  # two full blocks of 16 reused
    assert second.token_ids == first.token_ids


def test_a_constraint_confines_both_backends_alike(mlx_llm: LLM, torch_llm: LLM) -> None:
    sequences = ((775, 170154, 220), (76043, 200008))  # ".get_weather " and ".lookup<|message|>"
    for params in (
        SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, constraint=OneOfTokenSequences(sequences)),
        SamplingParams(
            temperature=1.0, seed=5, max_tokens=6, ignore_eos=True, constraint=OneOfTokenSequences(sequences)
        ),
    ):
        ours = mlx_llm.generate(PROMPTS, params)
        reference = torch_llm.generate(PROMPTS, params)
        assert [r.token_ids for r in ours] == [r.token_ids for r in reference]
        for result in ours:
            assert any(tuple(result.token_ids[: len(s)]) == s for s in sequences), result.token_ids


def test_the_mlx_sampler_masks_plain_greedy_rows_too() -> None:
    logits = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    greedy = SamplingParams(temperature=0.0)
    entries = [
        BatchEntry(0, [1], 0, [0], True, greedy),
        BatchEntry(1, [1], 0, [0], True, greedy, allowed_tokens=PendingMask.of_ids((5, 9, 40))),
    ]
    picks = MlxSampler()(mx.array(logits), entries)
    assert picks[0].token_id == int(logits[0].argmax())
    assert picks[1].token_id == max((5, 9, 40), key=lambda i: logits[1, i])


def test_prompt_logprobs_agree_with_torch_across_chunks(mlx_llm: LLM, torch_llm: LLM) -> None:
    prompts = [*PROMPTS, list(range(3000, 3070))]  # 70 tokens: three chunks of at most 32
    params = SamplingParams(max_tokens=0, prompt_logprobs=2)
    ours = mlx_llm.generate(prompts, params)
    reference = torch_llm.generate(prompts, params)
    for prompt, mine, theirs in zip(prompts, ours, reference, strict=True):
        assert (mine.token_ids, mine.finish_reason) == ([], FinishReason.LENGTH)
        assert mine.prompt_logprobs[0] is None and [lp.token_id for lp in mine.prompt_logprobs[1:]] == prompt[1:]
        for a, b in zip(mine.prompt_logprobs[1:], theirs.prompt_logprobs[1:], strict=True):
            assert abs(a.logprob - b.logprob) <= 1e-4
            assert [t for t, _ in a.top_logprobs] == [t for t, _ in b.top_logprobs]

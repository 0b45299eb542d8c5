"""Prompt logprobs on CUDA (bf16, Triton kernels, decode graphs on) against the CPU float32 runner.

A prompt scored in chunks on the GPU, beside requests that decode through the graphs, must be no further from the
float32 scores than bf16 itself puts them: the CPU's own bf16 scores are the yardstick (on the demo checkpoint they
lie ~0.3 from float32 at worst, over 210 positions). The GPU's chunked and one-chunk scores must agree as closely.
"""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# The GPU's error may exceed the CPU bf16 error by error * REL_MARGIN + ABS_MARGIN (mean and max alike): the two
# bf16 paths round in different orders.
REL_MARGIN = 0.5
MEAN_ABS_MARGIN = 0.01
MAX_ABS_MARGIN = 0.1


def _prompt(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(200_000) for _ in range(length)]


def _scores(results) -> torch.Tensor:
    return torch.cat([torch.tensor([lp.logprob for lp in r.prompt_logprobs[1:]]) for r in results])


def _error(scores: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    diff = (scores - reference).abs()
    return diff.mean().item(), diff.max().item()


def test_gpu_prompt_logprobs_are_as_close_to_float32_as_bf16_beside_graphed_decodes(demo_model_dir):
    from tkr_embed.backends.torch.runner import TorchModelRunner
    from tkr_embed.engine.sampling_params import SamplingParams
    from tkr_embed.llm import LLM

    torch.set_num_threads(2)
    scored = [_prompt(150, seed=1), _prompt(61, seed=2)]
    score = SamplingParams(max_tokens=0, prompt_logprobs=2)
    decode = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    decoding = [_prompt(8, seed=3), _prompt(5, seed=4)]

    fp32 = _scores(
        LLM.from_runner(TorchModelRunner(demo_model_dir, device="cpu", dtype="float32", num_kv_blocks=64)).generate(
            scored, score
        )
    )
    bf16 = _scores(
        LLM.from_runner(TorchModelRunner(demo_model_dir, device="cpu", dtype="bfloat16", num_kv_blocks=64)).generate(
            scored, score
        )
    )
    gpu_runner = TorchModelRunner(demo_model_dir, device="cuda", num_kv_blocks=256, cuda_graph_batch_sizes=(1, 2, 4))
    chunked = LLM.from_runner(gpu_runner, max_num_batched_tokens=48)
    results = chunked.generate(scored + decoding, [score, score, decode, decode])
    on_gpu = _scores(results[:2])
    one_chunk = _scores(LLM.from_runner(gpu_runner).generate(scored, score))

    yardstick = _error(bf16, fp32)
    gpu_error = _error(on_gpu, fp32)
    chunk_error = _error(on_gpu, one_chunk)
    report = f"(mean, max) |gpu - fp32| {gpu_error}, |cpu bf16 - fp32| {yardstick}, |chunked - whole| {chunk_error}"
    print(report)
    assert gpu_error[0] <= yardstick[0] * (1 + REL_MARGIN) + MEAN_ABS_MARGIN, report
    assert gpu_error[1] <= yardstick[1] * (1 + REL_MARGIN) + MAX_ABS_MARGIN, report
    assert chunk_error[0] <= yardstick[0] + MEAN_ABS_MARGIN and chunk_error[1] <= yardstick[1] + MAX_ABS_MARGIN, report
    for result, prompt in zip(results, scored, strict=False):
        assert [lp.token_id for lp in result.prompt_logprobs[1:]] == prompt[1:]
        assert (result.token_ids, result.finish_reason.value) == ([], "length")
    assert all(len(result.token_ids) == 24 for result in results[2:])
    assert chunked.engine.stats().kv_blocks_used == 0

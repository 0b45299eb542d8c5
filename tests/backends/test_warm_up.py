"""The warm-up a CUDA runner runs before serving: one step of each MoE kernel family's token counts.

On the GPU, tests/gpu/test_gpu_runner.py checks that nothing is compiled after it; here the counts against the
dispatch rules, and that a CPU runner has nothing to warm up."""

from __future__ import annotations

import torch

from tkr_embed.backends.torch.kernels import mxfp4_moe
from tkr_embed.backends.torch.kernels.mxfp4_moe_decode import DecodeTileConfig
from tkr_embed.backends.torch.kernels.mxfp4_moe_grouped import default_grouped_config
from tkr_embed.backends.torch.kernels.mxfp4_moe_mma import default_mma_config
from tkr_embed.backends.torch.warm_up import warm_up_token_counts


def _family(tokens: int) -> str:
    """The kernel family the CUDA dispatch picks for a step of `tokens` (top 4; MMA allowed where it applies)."""
    if mxfp4_moe.PREFILL_DEQUANT_MIN_TOKENS is not None and tokens >= mxfp4_moe.PREFILL_DEQUANT_MIN_TOKENS:
        return "prefill"
    config = mxfp4_moe.default_config(tokens, 4)
    if isinstance(config, mxfp4_moe.GemvConfig):
        return "gemv"
    if isinstance(config, DecodeTileConfig):
        return "decode"
    return f"grouped {default_grouped_config(tokens).block_m}"


def test_one_count_per_kernel_family_up_to_the_largest_step():
    counts = warm_up_token_counts(8192, 131072)
    assert counts == sorted(counts) and counts[-1] == 8192
    families = [_family(n) for n in counts]
    assert set(families) == {"gemv", "decode", "grouped 64", "grouped 128", "prefill"}
    # where the model allows the MMA kernels they take 16..128 tokens, in 8-token blocks while experts average
    # at most two pairs (120b's 128 experts at 24 tokens) and 16-token blocks beyond (at 72)
    mma = [n for n in counts if mxfp4_moe.MMA_MIN_TOKENS <= n <= mxfp4_moe.MMA_MAX_TOKENS]
    assert [default_mma_config(4 * n, 128).block_t for n in mma] == [8, 16]
    # every family a step of 1..8192 tokens can meet has its count
    assert {_family(n) for n in range(1, 8193, 7)} <= set(families)


def test_counts_stay_within_the_step_and_the_cache():
    assert warm_up_token_counts(2048, 10**6)[-1] == 2048 and _family(2048) == "grouped 64"
    assert max(warm_up_token_counts(8192, 3000)) == 3000
    assert warm_up_token_counts(16, 100) == [8, 16]


def test_a_cpu_runner_has_nothing_to_warm_up(demo_model_dir):
    from tkr_embed.backends.torch.runner import TorchModelRunner

    runner = TorchModelRunner(demo_model_dir, device="cpu", num_kv_blocks=32)
    before = [cache.clone() for cache in runner.kv_caches]
    assert runner.warm_up(8192) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, runner.kv_caches, strict=True))

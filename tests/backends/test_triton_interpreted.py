"""The CUDA MoE kernels' logic on the CPU: Triton's interpreter runs them against the float32 reference.

On a GPU the kernels dequantize with PTX (checked by tests/gpu); here the same kernels run their
integer dequantization, in-kernel routing (the expert-major decode kernel ranks its own pairs),
both tile orientations and the RMSNorm that sums the per-pair results; and constrained sampling's mask kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def _interpreted(cases_script: str, timeout: int) -> list[dict]:
    """Run one of this folder's cases scripts under TRITON_INTERPRET=1 -> the JSON list it prints last."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    script = Path(__file__).with_name(cases_script)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_moe_kernels_match_the_reference_under_the_interpreter():
    results = _interpreted("triton_interpreted_cases.py", timeout=600)
    split = results.pop()
    # two K shares of the down projection give two partial rows a pair, which sum to the unsplit result
    assert split["shape"] == [2, 8, 128] and split["error"] < 5e-3, split
    router = results.pop()
    # the decode batch's router: the experts carrying the 4 largest (bf16) logits, softmax-weighted (a logit summed
    # in another order may round to the neighbouring bf16 value: the weights agree to a few hundredths)
    assert router["distinct"] and router["chosen_are_top"] and router["weights_error"] < 0.05, router
    assert [r["kernel"] for r in results] == [
        "GemvConfig",
        "GemvConfig",
        "GemvConfig",
        "DecodeTileConfig",
        "DecodeTileConfig",
        "GroupedTileConfig",
        "GroupedTileConfig",
        "GroupedTileConfig",
        "add_rms_norm(parts)",
    ]
    for result in results[:-1]:
        assert result["shape"] == [result["tokens"], 128], result
    assert results[-1]["shape"] == [3, 4, 128]
    assert results[-1]["fp16_copy_equal"]  # the norm's output also written in fp16 (the MMA experts')
    # bf16 activations and per-pair results: ~0.7% from float32; a wrong pair, expert or nibble is > 10%
    assert all(r["error"] < 2e-2 for r in results), results


def test_dense_gemv_matches_float32_under_the_interpreter():
    """The few-token projections (the o projection and the router): tails in K and rows, bias, 1-4 tokens."""
    results = _interpreted("dense_gemv_cases.py", timeout=300)
    assert [r["shape"] for r in results] == [[1, 40], [3, 37], [4, 32], [2, 300]]
    # bf16 output rounding is ~0.3%; a skipped K block or a wrong row is > 10%
    assert all(r["error"] < 1e-2 for r in results), results


def test_prefill_moe_dequantizes_once_and_matches_the_reference_under_the_interpreter():
    """Large batches: the experts dequantized exactly (bit for bit the reference's bf16), then grouped
    GEMMs with the bias, SwiGLU and routing weight; all experts at once and three a chunk agree; the next norm
    sums the rows where the GEMM left them."""
    results = _interpreted("prefill_moe_cases.py", timeout=300)
    assert results[0] == {"kernel": "dequantize", "shape": [8, 192, 128], "equal": True}
    norms = [results.pop(), results.pop()][::-1]
    # the norm summing the rows sorted by expert (one chunk; three chunks of 16 tokens concatenated) equals, bit for
    # bit, the norm summing the per-pair results in pair order; those equal the chunked path's
    assert [(r["chunk_tokens"], r["rows"]) for r in norms] == [(1 << 15, [160, 128]), (16, [160, 128])], norms
    assert all(r["equal"] and r["parts_equal"] for r in norms), norms
    chunked = results.pop()
    assert chunked["shape"] == [40, 4, 128] and chunked["error"] < 1e-3, chunked
    assert [(r["chunked"], r["shape"]) for r in results[1:]] == [(False, [40, 4, 128]), (True, [40, 4, 128])]
    # bf16 GEMM outputs and per-pair results: ~0.7% from float32; a wrong expert or row is > 10%
    assert all(r["error"] < 2e-2 for r in results[1:]), results
    assert results[1]["error"] == results[2]["error"]


def test_align_kernel_equals_the_torch_alignment_under_the_interpreter():
    """One program groups pairs by expert exactly as the torch operations do, also several chunks of them."""
    results = _interpreted("align_cases.py", timeout=300)
    assert len(results) == 9
    assert all(r["pairs_equal"] and r["blocks_equal"] for r in results), results


def test_every_moe_kernel_reads_experts_in_16_row_tiles_as_in_checkpoint_order():
    """The CUDA model keeps the experts' bytes in 16-row tiles (expert_layout): each kernel family given the
    tiled bytes (tiled=True) returns bit for bit what it returns from the checkpoint's order."""
    results = _interpreted("tiled_layout_cases.py", timeout=600)
    assert [r["kernel"] for r in results] == [
        "GemvConfig",
        "GemvConfig",
        "DecodeTileConfig",
        "DecodeTileConfig",
        "GroupedTileConfig",
        "dequantize",
        "prefill",
    ]
    assert all(r.get("bytes_moved", True) for r in results), results
    assert all(r["equal"] for r in results), results


def test_the_mask_kernel_equals_the_unpacked_mask_under_the_interpreter():
    """Constrained sampling's one-pass mask: -inf exactly where the packed bit is clear, the logits untouched."""
    results = _interpreted("token_mask_cases.py", timeout=300)
    assert [r["vocab"] for r in results] == [4160, 1005]
    for result in results:
        assert result["equal"] and result["untouched"], result
        assert result["single"] == [[result["vocab"] - 1], [3 * 32 + 31]], result

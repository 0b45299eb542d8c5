"""MLX logits against the torch reference on the demo checkpoint, step by step over the paged cache.

Tolerances (demo logits reach |20|, standard deviation about 4):
- none, fp32 on both backends: max |difference| <= 1e-4 (measured about 1.2e-5).
- bf16 weights and activations (the Metal default): max |difference| <= 1.0 (measured 0.29).
- q8: RMS difference <= 5% of the logits' standard deviation (measured 2.6%), max <= 1.0 (measured 0.49).
- q4: RMS difference <= 50% of the standard deviation (measured 30%: the demo's Gaussian random weights
  are the worst case for 4-bit groups), and always larger than q8's.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch

from tkr_embed.backends.mlx.attention import AttentionInputError
from tkr_embed.backends.mlx.runner import MlxModelRunner
from tkr_embed.backends.mlx.weights import Mxfp4Experts, QuantizedWeight
from tkr_embed.backends.torch.attention import build_attention_metadata
from tkr_embed.backends.torch.runner import TorchModelRunner
from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.models.gpt_oss.mxfp4 import dequantize_mxfp4, random_mxfp4

torch.set_num_threads(2)
GREEDY = SamplingParams(temperature=0.0)
NUM_BLOCKS = 16


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(0, 200_000, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


PROMPT_A, PROMPT_B = _prompt(40, 1), _prompt(7, 2)
PROMPT_C = PROMPT_A[:16] + _prompt(5, 3)  # shares A's first block


def _entry(
    seq_id: int,
    prompt: list[int],
    start: int,
    end: int,
    table: list[int],
    sample: bool,
    new_tokens: list[int] | None = None,
) -> BatchEntry:
    tokens = new_tokens if new_tokens is not None else prompt[start:end]
    return BatchEntry(seq_id, tokens, start, table, sample, GREEDY, tuple(prompt))


# Scattered block tables; C reuses A's first block (a prefix-cache hit on 16 shared tokens).
TABLE_A, TABLE_B, TABLE_C = [7, 2, 5], [0], [7, 9]
STEPS = [
    # a prefill chunk that samples nothing, beside a whole short prompt
    [_entry(1, PROMPT_A, 0, 24, TABLE_A, False), _entry(2, PROMPT_B, 0, 7, TABLE_B, True)],
    # the last chunk of A (past the 16-token window), a decode of B, and C prefilling after its cached prefix
    [
        _entry(1, PROMPT_A, 24, 40, TABLE_A, True),
        _entry(2, PROMPT_B, 7, 8, TABLE_B, True, [11]),
        _entry(3, PROMPT_C, 16, 21, TABLE_C, True),
    ],
    # decodes only
    [
        _entry(1, PROMPT_A, 40, 41, TABLE_A, True, [5]),
        _entry(2, PROMPT_B, 8, 9, TABLE_B, True, [12]),
        _entry(3, PROMPT_C, 21, 22, TABLE_C, True, [13]),
    ],
]


def _torch_logits(runner: TorchModelRunner, batch: ScheduledBatch) -> np.ndarray:
    entries = batch.entries
    ids = torch.tensor([t for e in entries for t in e.token_ids])
    positions = torch.tensor([p for e in entries for p in range(e.start_pos, e.start_pos + len(e.token_ids))])
    metadata = build_attention_metadata(
        [(e.start_pos, len(e.token_ids), e.block_table) for e in entries], runner.block_size, "cpu"
    )
    hidden = runner.model(ids, positions, runner.kv_caches, metadata)
    ends = np.cumsum([len(e.token_ids) for e in entries]) - 1
    rows = torch.tensor([int(end) for end, e in zip(ends, entries, strict=False) if e.sample])
    return runner.model.compute_logits(hidden[rows]).numpy()


def _mlx_logits_per_step(model_dir: Path, quantization: str) -> list[np.ndarray]:
    runner = MlxModelRunner(
        model_dir, device="cpu", dtype="float32", quantization=quantization, num_kv_blocks=NUM_BLOCKS
    )
    return [np.array(runner.logits_for(ScheduledBatch(step))) for step in STEPS]


@pytest.fixture(scope="module")
def torch_logits(demo_model_dir: Path) -> list[np.ndarray]:
    runner = TorchModelRunner(demo_model_dir, device="cpu", dtype="float32", num_kv_blocks=NUM_BLOCKS)
    return [_torch_logits(runner, ScheduledBatch(step)) for step in STEPS]


@pytest.fixture(scope="module")
def mlx_none_logits(demo_model_dir: Path) -> list[np.ndarray]:
    return _mlx_logits_per_step(demo_model_dir, "none")


def test_fp32_logits_match_torch_at_every_step(
    torch_logits: list[np.ndarray], mlx_none_logits: list[np.ndarray]
) -> None:
    assert [t.shape for t in torch_logits] == [(1, 201088), (3, 201088), (3, 201088)]
    for reference, ours in zip(torch_logits, mlx_none_logits, strict=True):
        assert np.abs(reference - ours).max() <= 1e-4
        assert (reference.argmax(-1) == ours.argmax(-1)).all()


def test_bf16_logits_stay_within_the_stated_error(demo_model_dir: Path, mlx_none_logits: list[np.ndarray]) -> None:
    runner = MlxModelRunner(
        demo_model_dir, device="cpu", dtype="bfloat16", quantization="none", num_kv_blocks=NUM_BLOCKS
    )
    assert runner.info.dtype == "bfloat16"
    for step, reference in zip(STEPS, mlx_none_logits, strict=True):
        logits = np.array(runner.logits_for(ScheduledBatch(step)))
        assert logits.dtype == np.float32
        assert 0 < np.abs(logits - reference).max() <= 1.0


def test_quantized_logits_stay_within_the_stated_error(demo_model_dir: Path, mlx_none_logits: list[np.ndarray]) -> None:
    reference = np.concatenate(mlx_none_logits)
    spread = reference.std()
    errors = {}
    for quantization in ("q8", "q4"):
        logits = np.concatenate(_mlx_logits_per_step(demo_model_dir, quantization))
        errors[quantization] = float(np.sqrt(((logits - reference) ** 2).mean()))
        if quantization == "q8":
            assert np.abs(logits - reference).max() <= 1.0
    assert 0 < errors["q8"] <= 0.05 * spread
    assert errors["q8"] < errors["q4"] <= 0.5 * spread


def test_q8_quantizes_attention_and_embeddings_but_keeps_the_router(demo_model_dir: Path) -> None:
    runner = MlxModelRunner(demo_model_dir, device="cpu", dtype="float32", quantization="q8", num_kv_blocks=2)
    model = runner.model
    layer = model.layers[0]
    quantized = [model.embed_tokens, model.lm_head, layer.attention.q_proj, layer.attention.o_proj]
    assert all(isinstance(linear.weight, QuantizedWeight) and linear.weight.bits == 8 for linear in quantized)
    assert not layer.router.is_quantized
    assert layer.experts.gate_up_words.dtype == mx.uint32 and layer.experts.gate_up_scales.dtype == mx.uint8


@pytest.mark.parametrize("sort_threshold", [1, 10_000], ids=["grouped-by-expert", "direct-gather"])
def test_mxfp4_experts_match_the_dequantized_reference(sort_threshold: int) -> None:
    generator = torch.Generator().manual_seed(0)
    num_experts, hidden, inter = 3, 64, 32
    gate_up_blocks, gate_up_scales = random_mxfp4((num_experts, 2 * inter, hidden), std=0.1, generator=generator)
    down_blocks, down_scales = random_mxfp4((num_experts, hidden, inter), std=0.1, generator=generator)
    gate_up_scales += torch.randint(0, 3, gate_up_scales.shape, generator=generator, dtype=torch.uint8)
    gate_up_bias, down_bias = torch.randn(num_experts, 2 * inter) * 0.1, torch.randn(num_experts, hidden) * 0.1
    experts = Mxfp4Experts(
        Mxfp4Experts.words_from_blocks(gate_up_blocks),
        mx.array(gate_up_scales.numpy()),
        mx.array(gate_up_bias.numpy()),
        Mxfp4Experts.words_from_blocks(down_blocks),
        mx.array(down_scales.numpy()),
        mx.array(down_bias.numpy()),
    )
    x = torch.randn(5, hidden, generator=generator)
    ids = torch.tensor([[0, 2], [1, 0], [2, 1], [0, 1], [2, 0]])
    weights = torch.softmax(torch.randn(5, 2, generator=generator), dim=-1)
    ours = np.array(
        experts(
            mx.array(x.numpy()),
            mx.array(ids.numpy().astype(np.uint32)),
            mx.array(weights.numpy()),
            7.0,
            1.702,
            sort_threshold=sort_threshold,
        )
    )
    gate_up_w = dequantize_mxfp4(gate_up_blocks, gate_up_scales, torch.float32)  # [E, 2I, H]
    down_w = dequantize_mxfp4(down_blocks, down_scales, torch.float32)  # [E, H, I]
    expected = torch.zeros(5, hidden)
    for token in range(5):
        for slot in range(2):
            e = ids[token, slot]
            h = x[token] @ gate_up_w[e].T + gate_up_bias[e]
            gate, linear = h[0::2].clamp(max=7.0), h[1::2].clamp(-7.0, 7.0)
            out = ((linear + 1) * gate * torch.sigmoid(gate * 1.702)) @ down_w[e].T + down_bias[e]
            expected[token] += weights[token, slot] * out
    assert np.abs(ours - expected.numpy()).max() <= 1e-5


def test_a_block_table_too_short_is_refused(demo_model_dir: Path) -> None:
    runner = MlxModelRunner(demo_model_dir, device="cpu", dtype="float32", quantization="none", num_kv_blocks=2)
    entry = BatchEntry(1, PROMPT_A[:20], 0, [0], True, GREEDY, tuple(PROMPT_A[:20]))
    with pytest.raises(AttentionInputError, match="cannot hold 20 positions"):
        runner.execute(ScheduledBatch([entry]))

"""The plain-torch references themselves (run on CPU in CI): the ground truth of the GPU kernels."""

from __future__ import annotations

import math

import torch

from tkr_embed.backends.torch.kernels.attention_reference import paged_attention_reference, write_kv_cache
from tkr_embed.backends.torch.kernels.moe_align import align_pairs_to_experts
from tkr_embed.backends.torch.kernels.mxfp4_reference import dequantize_mxfp4, route_topk, swiglu_clamped


def test_dequantize_mxfp4_reads_low_nibble_first_and_applies_e8m0_scale():
    blocks = torch.zeros(1, 16, dtype=torch.uint8)
    blocks[0, 0] = 0x2F  # low nibble 0xF = -6.0, high nibble 0x2 = 1.0
    blocks[0, 1] = 0x91  # low 0x1 = 0.5, high 0x9 = -0.5
    scales = torch.tensor([128], dtype=torch.uint8)  # 2^1
    values = dequantize_mxfp4(blocks, scales)
    assert values.shape == (32,)
    assert values[:4].tolist() == [-12.0, 2.0, 1.0, -1.0]
    assert values[4:].abs().sum().item() == 0.0


def test_swiglu_clamps_gate_above_and_up_both_sides():
    gate = torch.tensor([10.0, -3.0])
    up = torch.tensor([-9.0, 9.0])
    out = swiglu_clamped(gate, up)
    expected_0 = (-7.0 + 1) * 7.0 * (1 / (1 + math.exp(-1.702 * 7.0)))
    expected_1 = (7.0 + 1) * -3.0 * (1 / (1 + math.exp(1.702 * 3.0)))
    assert torch.allclose(out, torch.tensor([expected_0, expected_1]), rtol=1e-6)


def test_route_topk_softmaxes_over_the_chosen_experts_only():
    ids, weights = route_topk(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), 2)
    assert ids.tolist() == [[1, 3]]
    assert torch.allclose(weights, torch.tensor([[1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))]]))


def test_align_groups_pairs_by_expert_in_padded_blocks():
    topk_ids = torch.tensor([[2, 0], [2, 1], [0, 2]])  # pairs 0..5 -> experts 2,0,2,1,0,2
    aligned = align_pairs_to_experts(topk_ids, num_experts=4, block_m=2)
    blocks = aligned.sorted_pair_ids.view(-1, 2).tolist()
    experts = aligned.block_expert.tolist()
    assert blocks[:4] == [[1, 4], [3, 6], [0, 2], [5, 6]]  # 6 = padding row
    assert experts[:4] == [0, 1, 2, 2]
    assert all(e == -1 for e in experts[4:])
    assert all(row == [6, 6] for row in blocks[4:])


def test_attention_reference_sink_and_window_on_a_hand_checked_case():
    # one head, one kv head, head_dim 1, block size 2: keys at positions 0..3, all scores 0
    kv = torch.zeros(2, 3, 2, 1, 1)
    write_kv_cache(
        kv, torch.zeros(4, 1, 1), torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1), torch.tensor([4, 5, 0, 1])
    )  # blocks 2 then 0
    tables = torch.tensor([[2, 0]], dtype=torch.int32)
    query = torch.ones(1, 1, 1)
    args = (torch.tensor([0, 1]), torch.tensor([4]), tables, torch.tensor([0.0]))
    full = paged_attention_reference(query, kv, *args, sliding_window=0, scale=1.0)
    window = paged_attention_reference(query, kv, *args, sliding_window=2, scale=1.0)
    # equal scores: each visible key and the sink weigh the same
    assert torch.allclose(full, torch.tensor([(1 + 2 + 3 + 4) / 5.0]))
    assert torch.allclose(window, torch.tensor([(3 + 4) / 3.0]))

"""The experts' 16-row tile order (kernels/expert_layout.py) the CUDA model keeps its MXFP4 bytes in.

The kernels' reading of it is checked under Triton's interpreter (test_triton_interpreted.py) and on
the GPU; here the order itself, the in-place permutation, and that the module's own (reference) path
gives the same results after tiling.
"""

from __future__ import annotations

import torch

from tkr_embed.backends.torch.kernels.expert_layout import can_tile, tile_in_place, tiled, untiled
from tkr_embed.backends.torch.kernels.mxfp4_reference import random_mxfp4
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.moe import Experts


def test_a_tile_column_holds_32_bytes_of_16_consecutive_rows():
    blocks, scales = random_mxfp4(3, 48, 192, generator=torch.Generator().manual_seed(0))  # rows 48, K 192
    t_blocks, t_scales = tiled(blocks, scales)
    assert t_blocks.shape == blocks.shape and t_scales.shape == scales.shape
    row_bytes, groups = 96, 6
    flat_b, flat_s = t_blocks.reshape(3, -1), t_scales.reshape(3, -1)
    for expert, row, byte in [(0, 0, 0), (1, 17, 40), (2, 47, 95), (2, 31, 64), (0, 15, 33)]:
        tile, r, column, b = row // 16, row % 16, byte // 32, byte % 32
        position = tile * 16 * row_bytes + column * 512 + r * 32 + b
        assert flat_b[expert, position] == blocks[expert, row, byte // 16, byte % 16]
        group = byte // 16
        s_position = tile * 16 * groups + (group // 2) * 32 + r * 2 + group % 2
        assert flat_s[expert, s_position] == scales[expert, row, group]
    back_b, back_s = untiled(t_blocks, t_scales)
    assert torch.equal(back_b, blocks) and torch.equal(back_s, scales)
    assert not torch.equal(t_blocks, blocks)


def test_tiling_in_place_equals_the_tiled_copy():
    blocks, scales = random_mxfp4(4, 32, 128, generator=torch.Generator().manual_seed(1))
    expected = tiled(blocks, scales)
    storage = blocks.data_ptr()
    tile_in_place(blocks, scales)
    assert blocks.data_ptr() == storage
    assert torch.equal(blocks, expected[0]) and torch.equal(scales, expected[1])


def test_only_whole_tiles_are_tiled():
    assert can_tile(torch.empty(2, 32, 4, 16, dtype=torch.uint8))
    assert not can_tile(torch.empty(2, 24, 4, 16, dtype=torch.uint8))  # rows not a multiple of 16
    assert not can_tile(torch.empty(2, 32, 3, 16, dtype=torch.uint8))  # K = 96, not a multiple of 64


def _experts(hidden: int, intermediate: int) -> Experts:
    config = GptOssConfig(hidden_size=hidden, intermediate_size=intermediate, num_local_experts=4, num_hidden_layers=1)
    experts = Experts(config, device="cpu", dtype=torch.bfloat16, expert_format="mxfp4")
    gen = torch.Generator().manual_seed(2)
    experts.gate_up_proj_blocks.data, experts.gate_up_proj_scales.data = random_mxfp4(
        4, 2 * intermediate, hidden, generator=gen
    )
    experts.down_proj_blocks.data, experts.down_proj_scales.data = random_mxfp4(4, hidden, intermediate, generator=gen)
    experts.gate_up_proj_bias.data = torch.randn(4, 2 * intermediate, generator=gen).to(torch.bfloat16)
    experts.down_proj_bias.data = torch.randn(4, hidden, generator=gen).to(torch.bfloat16)
    return experts


def test_the_reference_path_gives_the_same_results_from_tiled_experts():
    experts = _experts(128, 64)
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(5, 128, generator=gen).to(torch.bfloat16)
    topk_ids = torch.tensor([[0, 1], [2, 3], [1, 2], [3, 0], [0, 2]])
    topk_weights = torch.softmax(torch.randn(5, 2, generator=gen), -1).to(torch.bfloat16)
    before = experts.experts_forward(hidden, topk_ids, topk_weights)
    checkpoint_bytes = experts.gate_up_proj_blocks.clone()
    assert experts.tile_for_kernels() and experts.tiled
    assert not torch.equal(experts.gate_up_proj_blocks, checkpoint_bytes)
    assert torch.equal(experts.experts_forward(hidden, topk_ids, topk_weights), before)
    tiled_bytes = experts.gate_up_proj_blocks.clone()
    assert experts.tile_for_kernels() and torch.equal(experts.gate_up_proj_blocks, tiled_bytes)  # once only


def test_experts_that_do_not_tile_stay_in_checkpoint_order():
    experts = _experts(128, 96)  # the down projection's K = 96
    before = experts.down_proj_blocks.clone()
    assert not experts.tile_for_kernels() and not experts.tiled
    assert torch.equal(experts.down_proj_blocks, before)

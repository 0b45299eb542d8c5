"""Where the MoE kernels find a weight row's MXFP4 bytes on the GPU: checkpoint order, or 16-row tiles.

Checkpoints store each expert's blocks row by row ([E, N, K/32, 16] bytes: a row's K/2 bytes are
contiguous). A kernel whose 32 lanes hold 16 rows reads then, per load instruction, 32 bytes of eight
rows ~1.4 KB apart: eight cache lines for 256 bytes. On CUDA the model stores the experts in tiles
instead (same tensors, same shapes, bytes permuted once when the kernels are prepared):

    blocks [E, N/16, K/64, 16 rows, 32 bytes]     scales [E, N/16, K/64, 16 rows, 2]

so the 32 bytes (64 codes) of 16 consecutive rows lie together and such a load reads whole lines.
It is faster on an H100: one layer at 64 tokens 0.257 -> 0.221 ms; 64 streams 5,204 -> 5,585
output tok/s; batch 1 2.139 -> 2.032 ms a token. Tiling needs rows in
multiples of 16 and K in multiples of 64 (`can_tile`); otherwise the experts keep checkpoint order and
the kernels are told so (their TILED constexpr).

In both orders a row starts at `row_start(row)` and its element c (byte, int32 word or scale byte) lies
at `col_offset(c)` from there, with UNIT the row's elements in one tile column (32 bytes, 8 words or 2
scale bytes): checkpoint order is the same formula with one-row tiles as wide as the row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights

TILE_ROWS = 16
TILE_CODES = 64  # a row's codes in one tile column: 32 bytes, 8 int32 words, 2 scale bytes
ENABLED = True  # False: the model keeps checkpoint order (for A/B runs: bench/with_patch.py)


def can_tile(blocks: torch.Tensor) -> bool:
    """Whether blocks [E, N, K/32, 16] divide into 16-row, 64-code tiles (and tiling is enabled)."""
    return ENABLED and blocks.shape[1] % TILE_ROWS == 0 and blocks.shape[2] % (TILE_CODES // 32) == 0


def _tile_view(t: torch.Tensor, unit: int) -> torch.Tensor:
    """[..., N, C] (one expert or all) in checkpoint order -> its tile-ordered view [..., N/16, C/unit, 16, unit]."""
    *lead, rows, cols = t.shape
    return t.reshape(*lead, rows // TILE_ROWS, TILE_ROWS, cols // unit, unit).transpose(-3, -2)


def tiled(blocks: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of blocks [E, N, K/32, 16] and scales [E, N, K/32] with their bytes in tile order (same shapes)."""
    experts, rows, groups, _ = blocks.shape
    b = _tile_view(blocks.reshape(experts, rows, groups * 16), 32).contiguous().view(blocks.shape)
    s = _tile_view(scales, 2).contiguous().view(scales.shape)
    return b, s


def tiled_weights(weights: MoeWeights) -> MoeWeights:
    """A copy of a layer's experts with the MXFP4 blocks and scales in tile order."""
    return MoeWeights(
        *tiled(weights.gate_up_blocks, weights.gate_up_scales),
        weights.gate_up_bias,
        *tiled(weights.down_blocks, weights.down_scales),
        weights.down_bias,
    )


def untiled(blocks: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `tiled` (any leading expert dims): checkpoint-ordered copies."""
    *lead, rows, groups, _ = blocks.shape
    tiles = blocks.reshape(*lead, rows // TILE_ROWS, groups // 2, TILE_ROWS, 32)
    b = tiles.transpose(-3, -2).contiguous().view(blocks.shape)
    s = scales.reshape(*lead, rows // TILE_ROWS, groups // 2, TILE_ROWS, 2).transpose(-3, -2).contiguous()
    return b, s.view(scales.shape)


def tile_in_place(blocks: torch.Tensor, scales: torch.Tensor) -> None:
    """Permute blocks and scales into tile order in their own storage, one expert at a time (the extra
    memory is one expert's bytes)."""
    for expert in range(blocks.shape[0]):
        b, s = tiled(blocks[expert : expert + 1], scales[expert : expert + 1])
        blocks[expert].copy_(b[0])
        scales[expert].copy_(s[0])


@triton.jit
def row_start(rows, row_len, UNIT: tl.constexpr, TILED: tl.constexpr):
    """Offset of each row's first element (row_len elements a row; UNIT elements a row per tile column)."""
    if TILED:
        return (rows // 16) * (16 * row_len) + (rows % 16) * UNIT
    else:
        return rows * row_len


@triton.jit
def col_offset(cols, UNIT: tl.constexpr, TILED: tl.constexpr):
    """Offset of element `cols` of a row from the row's start."""
    if TILED:
        return (cols // UNIT) * (16 * UNIT) + cols % UNIT
    else:
        return cols

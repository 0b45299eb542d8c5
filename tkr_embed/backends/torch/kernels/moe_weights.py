"""One layer's experts as every CUDA MoE kernel takes them."""

from __future__ import annotations

from typing import NamedTuple

import torch


class MoeWeights(NamedTuple):
    """MXFP4 blocks and scales (checkpoint order, or the kernels' 16-row tiles: `expert_layout`) and biases.

    A tuple, so `*weights` still spells the six tensors where a plain signature wants them (the reference)."""

    gate_up_blocks: torch.Tensor  # [E, 2I, D/32, 16] uint8 (gate and up rows interleaved)
    gate_up_scales: torch.Tensor  # [E, 2I, D/32] uint8
    gate_up_bias: torch.Tensor  # [E, 2I]
    down_blocks: torch.Tensor  # [E, D, I/32, 16] uint8
    down_scales: torch.Tensor  # [E, D, I/32] uint8
    down_bias: torch.Tensor  # [E, D]

    @property
    def gate_up(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.gate_up_blocks, self.gate_up_scales, self.gate_up_bias

    @property
    def down(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.down_blocks, self.down_scales, self.down_bias

    @property
    def num_experts(self) -> int:
        return self.gate_up_blocks.shape[0]

    @property
    def intermediate_size(self) -> int:
        return self.gate_up_blocks.shape[1] // 2

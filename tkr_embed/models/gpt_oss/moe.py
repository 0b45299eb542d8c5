"""The mixture-of-experts block: top-k router and the experts with the clamped SwiGLU.

Expert weights use the linear layout [E, out, in]: gate_up [E, 2I, H] (gate and linear halves
interleaved along the rows, as checkpoints store them) and down [E, H, I]. In the "mxfp4" format
they stay as checkpoint blocks/scales and the reference path dequantizes only the experts a batch
routes to; in the "dense" format they are plain tensors of the model dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tkr_embed.backends.torch.dispatch import use_kernels
from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.layers import empty_param
from tkr_embed.models.gpt_oss.mxfp4 import BLOCK_SIZE, BYTES_PER_BLOCK, dequantize_mxfp4

EXPERT_FORMATS = ("mxfp4", "dense")


class Router(nn.Module):
    def __init__(self, config: GptOssConfig, *, device, dtype) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.weight = empty_param(config.num_local_experts, config.hidden_size, device=device, dtype=dtype)
        self.bias = empty_param(config.num_local_experts, device=device, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [T, H] -> (topk_ids [T, k] int64, topk_weights [T, k]): softmax over the chosen logits."""
        logits = F.linear(hidden, self.weight, self.bias)  # [T, E]
        top_logits, topk_ids = torch.topk(logits, self.top_k, dim=-1)  # [T, k]
        return topk_ids, torch.softmax(top_logits, dim=-1)


class Experts(nn.Module):
    def __init__(self, config: GptOssConfig, *, device, dtype, expert_format: str) -> None:
        super().__init__()
        if expert_format not in EXPERT_FORMATS:
            raise ValueError(f"expert_format must be one of {EXPERT_FORMATS}, not {expert_format!r}")
        self.expert_format = expert_format
        self.num_experts = config.num_local_experts
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.limit = config.swiglu_limit
        self.alpha = config.swiglu_alpha
        self.dtype = dtype
        experts, hidden, inter = self.num_experts, self.hidden_size, self.intermediate_size
        if expert_format == "mxfp4":
            u8 = dict(device=device, dtype=torch.uint8)
            self.gate_up_proj_blocks = empty_param(experts, 2 * inter, hidden // BLOCK_SIZE, BYTES_PER_BLOCK, **u8)
            self.gate_up_proj_scales = empty_param(experts, 2 * inter, hidden // BLOCK_SIZE, **u8)
            self.down_proj_blocks = empty_param(experts, hidden, inter // BLOCK_SIZE, BYTES_PER_BLOCK, **u8)
            self.down_proj_scales = empty_param(experts, hidden, inter // BLOCK_SIZE, **u8)
        else:
            self.gate_up_proj = empty_param(experts, 2 * inter, hidden, device=device, dtype=dtype)
            self.down_proj = empty_param(experts, hidden, inter, device=device, dtype=dtype)
        self.gate_up_proj_bias = empty_param(experts, 2 * inter, device=device, dtype=dtype)
        self.down_proj_bias = empty_param(experts, hidden, device=device, dtype=dtype)
        self.tiled = False  # MXFP4 bytes in the CUDA kernels' 16-row tiles (tile_for_kernels)

    def tile_for_kernels(self) -> bool:
        """Permute the MXFP4 blocks and scales in place into the GPU kernels' 16-row tiles
        (kernels/expert_layout.py), where their shape allows. Returns whether the experts are tiled."""
        from tkr_embed.backends.torch.kernels.expert_layout import can_tile, tile_in_place

        if (
            self.expert_format == "mxfp4"
            and not self.tiled
            and can_tile(self.gate_up_proj_blocks)
            and can_tile(self.down_proj_blocks)
        ):
            tile_in_place(self.gate_up_proj_blocks, self.gate_up_proj_scales)
            tile_in_place(self.down_proj_blocks, self.down_proj_scales)
            self.tiled = True
        return self.tiled

    def kernel_weights(self) -> MoeWeights:
        """The MXFP4 experts as the CUDA kernels take them."""
        return MoeWeights(
            self.gate_up_proj_blocks,
            self.gate_up_proj_scales,
            self.gate_up_proj_bias,
            self.down_proj_blocks,
            self.down_proj_scales,
            self.down_proj_bias,
        )

    def _expert_mxfp4(self, blocks: torch.Tensor, scales: torch.Tensor, expert: int) -> torch.Tensor:
        """One expert's weights [N, K] in the model dtype, from checkpoint or tile order."""
        b, s = blocks[expert], scales[expert]
        if self.tiled:
            from tkr_embed.backends.torch.kernels.expert_layout import untiled

            b, s = untiled(b, s)
        return dequantize_mxfp4(b, s, self.dtype)

    def expert_weights(self, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up [2I, H], down [H, I]) of one expert in the model dtype."""
        if self.expert_format == "mxfp4":
            return (
                self._expert_mxfp4(self.gate_up_proj_blocks, self.gate_up_proj_scales, expert),
                self._expert_mxfp4(self.down_proj_blocks, self.down_proj_scales, expert),
            )
        return self.gate_up_proj[expert], self.down_proj[expert]

    def swiglu(self, gate_up: torch.Tensor) -> torch.Tensor:
        """[N, 2I] interleaved (gate, linear) -> [N, I]; clamped, `+1` on the linear half."""
        gate, linear = gate_up[..., 0::2], gate_up[..., 1::2]
        gate = gate.clamp(max=self.limit)
        linear = linear.clamp(min=-self.limit, max=self.limit)
        return (linear + 1) * (gate * torch.sigmoid(gate * self.alpha))

    def experts_forward(self, hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """hidden [T, H], topk_ids [T, k], topk_weights [T, k] -> [T, H]: the weighted sum of routed experts.

        On CUDA with MXFP4 experts the Triton kernel serves the call (no host sync: graph-safe).
        """
        if self.expert_format == "mxfp4" and use_kernels(hidden):
            from tkr_embed.backends.torch.kernels.mxfp4_moe import mxfp4_moe

            return mxfp4_moe(hidden, topk_ids, topk_weights, self.kernel_weights(), tiled=self.tiled)
        output = torch.zeros_like(hidden)  # [T, H]
        for expert in torch.unique(topk_ids).tolist():  # ascending, like the reference
            token_idx, slot = torch.where(topk_ids == expert)  # [n], [n]
            gate_up_w, down_w = self.expert_weights(expert)
            x = hidden[token_idx]  # [n, H]
            gate_up = F.linear(x, gate_up_w, self.gate_up_proj_bias[expert])  # [n, 2I]
            out = F.linear(self.swiglu(gate_up), down_w, self.down_proj_bias[expert])  # [n, H]
            weighted = out * topk_weights[token_idx, slot].unsqueeze(-1)
            output.index_add_(0, token_idx, weighted.to(hidden.dtype))
        return output


class MoE(nn.Module):
    def __init__(self, config: GptOssConfig, *, device, dtype, expert_format: str) -> None:
        super().__init__()
        self.router = Router(config, device=device, dtype=dtype)
        self.experts = Experts(config, device=device, dtype=dtype, expert_format=expert_format)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        topk_ids, topk_weights = self.router(hidden)
        return self.experts.experts_forward(hidden, topk_ids, topk_weights)

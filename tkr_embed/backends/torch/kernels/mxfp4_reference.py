"""Plain-torch MXFP4 mixture-of-experts: the reference every fast kernel is checked against.

Layout (as in the Hub checkpoints): blocks uint8 [E, N, K/32, 16], two FP4 e2m1 values a byte,
low nibble first; scales uint8 [E, N, K/32], E8M0 with bias 127; bias bf16 [E, N].
gate_up_proj has N = 2 * I with gate on even rows and up on odd rows.
"""

from __future__ import annotations

import torch

SWIGLU_LIMIT = 7.0
SWIGLU_ALPHA = 1.702

# FP4 e2m1 code -> value; bit 3 is the sign.
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Expand MXFP4 weights to a dense tensor.

    blocks [..., G, 16] uint8, scales [..., G] uint8  ->  [..., G * 32] of `dtype`.
    """
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    low = lut[(blocks & 0x0F).long()]  # [..., G, 16]
    high = lut[(blocks >> 4).long()]  # [..., G, 16]
    values = torch.stack((low, high), dim=-1).flatten(-2)  # [..., G, 32], low nibble first
    exponent = scales.to(torch.int32) - 127  # [..., G]
    values = torch.ldexp(values, exponent.unsqueeze(-1).to(torch.float32))
    return values.flatten(-2).to(dtype)  # [..., G * 32]


def swiglu_clamped(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gpt-oss SwiGLU: gate clamped above at 7, up clamped to [-7, 7], `+1` on the linear half."""
    gate = gate.clamp(max=SWIGLU_LIMIT)
    up = up.clamp(min=-SWIGLU_LIMIT, max=SWIGLU_LIMIT)
    return (up + 1) * gate * torch.sigmoid(SWIGLU_ALPHA * gate)


def route_topk(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts of each token, softmax over the chosen k: ([T, k] int32 ids, [T, k] fp32 weights)."""
    values, ids = torch.topk(router_logits.float(), top_k, dim=-1)  # [T, k]
    return ids.to(torch.int32), torch.softmax(values, dim=-1)


def moe_reference(
    hidden: torch.Tensor,  # [T, D]
    topk_ids: torch.Tensor,  # [T, k]
    topk_weights: torch.Tensor,  # [T, k]
    gate_up_blocks: torch.Tensor,  # [E, 2I, D/32, 16]
    gate_up_scales: torch.Tensor,  # [E, 2I, D/32]
    gate_up_bias: torch.Tensor,  # [E, 2I]
    down_blocks: torch.Tensor,  # [E, D, I/32, 16]
    down_scales: torch.Tensor,  # [E, D, I/32]
    down_bias: torch.Tensor,  # [E, D]
) -> torch.Tensor:
    """Experts forward in float32, one expert at a time (dequantizes only the experts in use). -> [T, D]"""
    num_tokens, hidden_size = hidden.shape
    x = hidden.float()
    out = torch.zeros(num_tokens, hidden_size, dtype=torch.float32, device=hidden.device)
    for expert in torch.unique(topk_ids).tolist():
        token_idx, slot_idx = torch.nonzero(topk_ids == expert, as_tuple=True)
        w_gate_up = dequantize_mxfp4(gate_up_blocks[expert], gate_up_scales[expert])  # [2I, D]
        w_down = dequantize_mxfp4(down_blocks[expert], down_scales[expert])  # [D, I]
        gate_up = x[token_idx] @ w_gate_up.T + gate_up_bias[expert].float()  # [n, 2I]
        act = swiglu_clamped(gate_up[:, 0::2], gate_up[:, 1::2])  # [n, I]
        down = act @ w_down.T + down_bias[expert].float()  # [n, D]
        weight = topk_weights[token_idx, slot_idx].float().unsqueeze(-1)  # [n, 1]
        out.index_add_(0, token_idx, down * weight)
    return out.to(hidden.dtype)


def random_mxfp4(
    num_experts: int,
    rows: int,
    cols: int,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random MXFP4 weights with scales near 2^-3 (values of a trained model's magnitude), made on `device`
    (a generator, if given, must live there too).

    -> blocks uint8 [E, rows, cols/32, 16], scales uint8 [E, rows, cols/32]
    """
    groups = cols // 32
    blocks = torch.randint(
        0, 256, (num_experts, rows, groups, 16), dtype=torch.uint8, generator=generator, device=device
    )
    scales = torch.randint(122, 126, (num_experts, rows, groups), dtype=torch.uint8, generator=generator, device=device)
    return blocks, scales

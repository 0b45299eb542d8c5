"""Dense building blocks of gpt-oss: linear, RMSNorm, YaRN rotary embedding, attention with sinks.

Parameters are created uninitialised (`torch.empty`): a loader or `random_init` fills every one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tkr_embed.backends.torch.attention import AttentionMetadata, paged_attention, write_kv_cache
from tkr_embed.models.gpt_oss.config import GptOssConfig


def empty_param(*shape: int, device: torch.device | str, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype), requires_grad=False)


class Linear(nn.Module):
    """y = x @ weight.T + bias, with weight [out, in] as checkpoints store it."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool, device, dtype) -> None:
        super().__init__()
        self.weight = empty_param(out_features, in_features, device=device, dtype=dtype)
        self.bias = empty_param(out_features, device=device, dtype=dtype) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    """Normalises in float32, scales by the weight in float32, returns the input dtype."""

    def __init__(self, hidden_size: int, eps: float, *, device, dtype) -> None:
        super().__init__()
        self.weight = empty_param(hidden_size, device=device, dtype=dtype)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * x32).to(x.dtype)


def yarn_inv_freq(config: GptOssConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [head_dim/2] (float32) and the cos/sin scale of YaRN (plain RoPE if not yarn)."""
    dim = config.head_dim
    base = config.rope_theta
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # [D/2]
    rope = config.rope_scaling or {}
    if rope.get("rope_type", "default") != "yarn":
        return 1.0 / pos_freqs, 1.0
    factor = float(rope["factor"])
    original_max = rope.get("original_max_position_embeddings", config.max_position_embeddings)
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    beta_fast = rope.get("beta_fast") or 32.0
    beta_slow = rope.get("beta_slow") or 1.0

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp  # 1: keep the original freq
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_weight) + (1.0 / pos_freqs) * extrapolation_weight
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """Rotates the two halves of each head (not interleaved), as gpt-oss was trained."""

    def __init__(self, config: GptOssConfig, *, device) -> None:
        super().__init__()
        inv_freq, self.scaling = yarn_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq.to(device), persistent=False)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float().unsqueeze(-1) * self.inv_freq  # [T, D/2]
        return (freqs.cos() * self.scaling).to(dtype), (freqs.sin() * self.scaling).to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D]; cos, sin [T, D/2]."""
    first, second = x.chunk(2, dim=-1)  # [T, H, D/2] each
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [T, 1, D/2]
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: GptOssConfig, layer_idx: int, *, device, dtype) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.sliding_window = config.layer_sliding_window(layer_idx)
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=bias, device=device, dtype=dtype)
        self.k_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, device=device, dtype=dtype)
        self.v_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, device=device, dtype=dtype)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=bias, device=device, dtype=dtype)
        self.sinks = empty_param(self.num_heads, device=device, dtype=dtype)
        self.qkv_weight: torch.Tensor | None = None  # set by fuse_qkv (CUDA kernels path)
        self.qkv_bias: torch.Tensor | None = None

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """One [(Hq + 2 Hkv) * D, hidden] weight for the three projections; q/k/v become views of it."""
        if self.qkv_weight is not None:
            return
        projections = (self.q_proj, self.k_proj, self.v_proj)
        self.qkv_weight = torch.cat([p.weight for p in projections])
        self.qkv_bias = torch.cat([p.bias for p in projections]) if self.q_proj.bias is not None else None
        start = 0
        for proj in projections:
            rows = proj.weight.shape[0]
            proj.weight.data = self.qkv_weight[start : start + rows]
            if self.qkv_bias is not None:
                proj.bias.data = self.qkv_bias[start : start + rows]
            start += rows

    def forward_kernels(
        self,
        hidden: torch.Tensor,  # [T, hidden], already normed
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """The CUDA path after fuse_qkv: one projection, RoPE + KV write in one kernel.

        Returns the output projection WITHOUT its bias [T, hidden] (the caller adds it in the norm).
        """
        from tkr_embed.backends.torch.kernels.dense_gemv import linear
        from tkr_embed.backends.torch.kernels.fused_ops import rope_write_kv

        num_tokens = hidden.shape[0]
        qkv = linear(hidden, self.qkv_weight)  # [T, (Hq+2Hkv)*D]
        q = rope_write_kv(
            qkv,
            self.qkv_bias,
            cos_sin[0],
            cos_sin[1],
            kv_cache,
            metadata.slot_mapping,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
        )  # [T, Hq, D]
        out = paged_attention(q, kv_cache, self.sinks, metadata, scale=self.scale, sliding_window=self.sliding_window)
        return linear(out.reshape(num_tokens, self.num_heads * self.head_dim), self.o_proj.weight)

    def forward(
        self,
        hidden: torch.Tensor,  # [T, hidden]
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,  # [2, blocks, block_size, Hkv, D]
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        q = self.q_proj(hidden).view(num_tokens, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = self.k_proj(hidden).view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = self.v_proj(hidden).view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        cos, sin = cos_sin
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        write_kv_cache(kv_cache, k, v, metadata.slot_mapping)
        out = paged_attention(q, kv_cache, self.sinks, metadata, scale=self.scale, sliding_window=self.sliding_window)
        return self.o_proj(out.reshape(num_tokens, self.num_heads * self.head_dim))  # [T, hidden]

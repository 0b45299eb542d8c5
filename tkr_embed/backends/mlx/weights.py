"""Weights of gpt-oss as MLX arrays: dense or affine-quantized linears, embeddings, MXFP4 experts.

Checkpoint tensors come through our loader's CheckpointReader (memory-mapped safetensors), one at a
time. MXFP4 expert blocks are bit-for-bit MLX's own "mxfp4" layout (two e2m1 codes a byte, the low
nibble first, one E8M0 exponent per 32 values), so they are reinterpreted as uint32 words, never
dequantized: `mx.gather_qmm(..., mode="mxfp4")` multiplies them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import torch

MXFP4_GROUP = 32
SORT_THRESHOLD = 64  # (token, expert) pairs from which experts are grouped before the matmul
AFFINE_GROUP_SIZES = (64, 32)  # the first that divides the input width is used


def to_mlx(tensor: torch.Tensor, dtype: mx.Dtype | None = None) -> mx.array:
    """A torch CPU tensor as an MLX array, cast to `dtype` when given.

    numpy has no bfloat16, so bf16 tensors cross as their raw 16-bit words (no float32 copy of a
    multi-GB embedding); other floats cross as float32.
    """
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        array = mx.array(tensor.view(torch.int16).numpy()).view(mx.bfloat16)
    elif tensor.dtype.is_floating_point:
        array = mx.array(tensor.to(torch.float32).numpy())
    else:
        return mx.array(tensor.numpy())
    return array.astype(dtype) if dtype is not None else array


@dataclass
class QuantizedWeight:
    """An affine-quantized [out, in] matrix: packed uint32 words, per-group scales and biases."""

    packed: mx.array  # [out, in * bits / 32] uint32
    scales: mx.array  # [out, in / group_size]
    biases: mx.array  # [out, in / group_size]
    bits: int
    group_size: int

    @classmethod
    def quantize(cls, weight: mx.array, bits: int) -> QuantizedWeight | None:
        """None when no supported group size divides the input width (the weight then stays dense)."""
        group_size = next((g for g in AFFINE_GROUP_SIZES if weight.shape[-1] % g == 0), None)
        if group_size is None:
            return None
        packed, scales, biases = mx.quantize(weight, group_size=group_size, bits=bits)
        return cls(packed, scales, biases, bits, group_size)

    def dequantize_rows(self, rows: mx.array) -> mx.array:
        """Rows of the matrix (an embedding lookup): rows [T] -> [T, in]."""
        return mx.dequantize(
            self.packed[rows], self.scales[rows], self.biases[rows], group_size=self.group_size, bits=self.bits
        )


@dataclass
class Linear:
    """y = x @ W.T + b with W [out, in] dense or quantized."""

    weight: mx.array | QuantizedWeight
    bias: mx.array | None = None

    def __call__(self, x: mx.array) -> mx.array:
        w = self.weight
        if isinstance(w, QuantizedWeight):
            y = mx.quantized_matmul(
                x, w.packed, w.scales, w.biases, transpose=True, group_size=w.group_size, bits=w.bits
            )
        else:
            y = x @ w.T
        return y if self.bias is None else y + self.bias

    def rows(self, ids: mx.array) -> mx.array:
        """Use the matrix as an embedding table: ids [T] -> [T, in]."""
        w = self.weight
        return w.dequantize_rows(ids) if isinstance(w, QuantizedWeight) else w[ids]

    @property
    def is_quantized(self) -> bool:
        return isinstance(self.weight, QuantizedWeight)


def maybe_quantize(weight: mx.array, bits: int | None) -> mx.array | QuantizedWeight:
    if bits is None:
        return weight
    quantized = QuantizedWeight.quantize(weight, bits)
    return weight if quantized is None else quantized


@dataclass
class Mxfp4Experts:
    """All experts of one layer: [E, out, in] as MXFP4 words/exponents, plus float biases."""

    gate_up_words: mx.array  # [E, 2I, H / 8] uint32
    gate_up_scales: mx.array  # [E, 2I, H / 32] uint8
    gate_up_bias: mx.array  # [E, 2I]
    down_words: mx.array  # [E, H, I / 8] uint32
    down_scales: mx.array  # [E, H, I / 32] uint8
    down_bias: mx.array  # [E, H]

    @staticmethod
    def words_from_blocks(blocks: torch.Tensor) -> mx.array:
        """Checkpoint blocks [E, N, K/32, 16] uint8 -> MLX words [E, N, K/8] uint32 (same bits)."""
        num_experts, rows = blocks.shape[0], blocks.shape[1]
        as_bytes = np.ascontiguousarray(blocks.numpy()).reshape(num_experts, rows, -1)  # [E, N, K/2]
        return mx.array(as_bytes.view(np.uint32))  # [E, N, K/8]

    @staticmethod
    def from_dense(weight: mx.array) -> tuple[mx.array, mx.array]:
        """A dense [E, out, in] float weight rounded to MXFP4 (for checkpoints stored dequantized)."""
        words, scales = mx.quantize(weight.astype(mx.float32), group_size=MXFP4_GROUP, bits=4, mode="mxfp4")
        return words, scales

    def __call__(
        self,
        hidden: mx.array,
        topk_ids: mx.array,
        topk_weights: mx.array,
        limit: float,
        alpha: float,
        *,
        sort_threshold: int = SORT_THRESHOLD,
    ) -> mx.array:
        """hidden [T, H], topk_ids [T, k] uint32, topk_weights [T, k] -> [T, H].

        With at least `sort_threshold` (token, expert) pairs the pairs are sorted by expert first,
        so each expert's weights are read once for all its tokens (prefill); fewer pairs (decode)
        gather directly.
        """
        num_tokens, top_k = topk_ids.shape
        if num_tokens * top_k >= sort_threshold:
            flat_ids = topk_ids.flatten()  # [T*k]
            order = mx.argsort(flat_ids)
            rows = hidden[order // top_k][:, None, :]  # [N, 1, H], N = T*k
            expert_ids, is_sorted = flat_ids[order], True
        else:
            rows, expert_ids, is_sorted = hidden[:, None, None, :], topk_ids, False  # [T, 1, 1, H]
        gate_up = mx.gather_qmm(
            rows,
            self.gate_up_words,
            self.gate_up_scales,
            None,
            rhs_indices=expert_ids,
            transpose=True,
            group_size=MXFP4_GROUP,
            bits=4,
            mode="mxfp4",
            sorted_indices=is_sorted,
        )  # [..., 1, 2I]
        gate_up = gate_up + self.gate_up_bias[expert_ids][..., None, :]
        gate, linear = gate_up[..., 0::2], gate_up[..., 1::2]  # interleaved halves
        gate = mx.minimum(gate, limit)
        linear = mx.clip(linear, -limit, limit)
        activated = (linear + 1) * (gate * mx.sigmoid(gate * alpha))  # [..., 1, I]
        down = mx.gather_qmm(
            activated,
            self.down_words,
            self.down_scales,
            None,
            rhs_indices=expert_ids,
            transpose=True,
            group_size=MXFP4_GROUP,
            bits=4,
            mode="mxfp4",
            sorted_indices=is_sorted,
        )  # [..., 1, H]
        down = down.squeeze(-2) + self.down_bias[expert_ids]  # [N, H] or [T, k, H]
        if is_sorted:
            down = down[mx.argsort(order)].reshape(num_tokens, top_k, -1)  # back to [T, k, H]
        return (down * topk_weights[..., None].astype(down.dtype)).sum(axis=1).astype(hidden.dtype)

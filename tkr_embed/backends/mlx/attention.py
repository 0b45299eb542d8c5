"""Paged attention on MLX: metadata built on the host, the KV cache, its write and the attention op.

Same block-table semantics as the torch backend: a sequence's position p lives in slot
`block_table[p // block_size] * block_size + p % block_size`. One layer's cache is two arrays
[num_blocks * block_size, Hkv, D] (K and V). A ragged batch of S sequences is padded to
[S, max_query_len] queries over [S, max_context_len] gathered keys, so one fused attention call
(`mx.fast.scaled_dot_product_attention`, with the per-head sinks) serves prefill chunks and
decodes together.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from tkr_embed.backends.paging import AttentionInputError, new_token_slots

__all__ = [
    "AttentionInputError",
    "ContextView",
    "MlxAttentionMetadata",
    "PagedKVCache",
    "build_metadata",
    "paged_attention",
]


@dataclass(frozen=True)
class ContextView:
    """The keys every sequence reads, padded to L: slots [S, L] int32, mask [S, 1, Qmax, L] bool."""

    slots: mx.array
    mask: mx.array


@dataclass(frozen=True)
class MlxAttentionMetadata:
    slot_mapping: mx.array  # [T] int32: cache slot of each new token
    query_index: mx.array  # [S, Qmax] int32: flat row of each padded query (pads read row 0)
    output_index: mx.array  # [T] int32: row of each flat token in the padded [S * Qmax] output
    full: ContextView  # whole context, for full-attention layers
    sliding: ContextView | None  # last `sliding_window` positions, for sliding layers

    def view(self, sliding_window: int | None) -> ContextView:
        return self.full if sliding_window is None or self.sliding is None else self.sliding


def _context_view(
    seqs: list[tuple[int, int, list[int]]], block_size: int, max_query_len: int, sliding_window: int | None
) -> ContextView:
    firsts = [0 if sliding_window is None else max(0, start - sliding_window + 1) for start, _, _ in seqs]
    context_len = max(start + num_new - first for (start, num_new, _), first in zip(seqs, firsts, strict=False))
    num_seqs = len(seqs)
    slots = np.zeros((num_seqs, context_len), dtype=np.int32)
    key_pos = np.full((num_seqs, context_len), np.iinfo(np.int32).max, dtype=np.int64)  # pads: never visible
    query_pos = np.full((num_seqs, max_query_len), -1, dtype=np.int64)  # pads: see nothing
    for row, ((start, num_new, block_table), first) in enumerate(zip(seqs, firsts, strict=False)):
        positions = np.arange(first, start + num_new)
        table = np.asarray(block_table, dtype=np.int64)
        slots[row, : len(positions)] = table[positions // block_size] * block_size + positions % block_size
        key_pos[row, : len(positions)] = positions
        query_pos[row, :num_new] = np.arange(start, start + num_new)
    visible = key_pos[:, None, :] <= query_pos[:, :, None]  # [S, Qmax, L]
    if sliding_window is not None:
        visible &= key_pos[:, None, :] > query_pos[:, :, None] - sliding_window
    return ContextView(slots=mx.array(slots), mask=mx.array(visible[:, None]))


def build_metadata(
    seqs: list[tuple[int, int, list[int]]], block_size: int, sliding_window: int | None
) -> MlxAttentionMetadata:
    """seqs = [(start_pos, num_new_tokens, block_table), ...] in batch order."""
    slot_mapping: list[int] = []
    for start, num_new, block_table in seqs:
        slot_mapping.extend(new_token_slots(start, num_new, block_table, block_size))
    max_query_len = max(num_new for _, num_new, _ in seqs)
    query_index = np.zeros((len(seqs), max_query_len), dtype=np.int32)
    output_index: list[int] = []
    flat = 0
    for row, (_, num_new, _) in enumerate(seqs):
        query_index[row, :num_new] = np.arange(flat, flat + num_new)
        output_index.extend(range(row * max_query_len, row * max_query_len + num_new))
        flat += num_new
    return MlxAttentionMetadata(
        slot_mapping=mx.array(np.asarray(slot_mapping, dtype=np.int32)),
        query_index=mx.array(query_index),
        output_index=mx.array(np.asarray(output_index, dtype=np.int32)),
        full=_context_view(seqs, block_size, max_query_len, None),
        sliding=None if sliding_window is None else _context_view(seqs, block_size, max_query_len, sliding_window),
    )


class PagedKVCache:
    """Per layer, K and V arrays [num_blocks * block_size, Hkv, D], zeroed at construction."""

    def __init__(
        self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: mx.Dtype
    ) -> None:
        shape = (num_blocks * block_size, num_kv_heads, head_dim)
        self.keys = [mx.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.values = [mx.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        mx.eval(self.keys, self.values)

    def write(self, layer: int, key: mx.array, value: mx.array, slot_mapping: mx.array) -> None:
        """Store the new tokens' K and V ([T, Hkv, D] each) at their slots."""
        self.keys[layer][slot_mapping] = key.astype(self.keys[layer].dtype)
        self.values[layer][slot_mapping] = value.astype(self.values[layer].dtype)

    def arrays(self) -> list[mx.array]:
        return self.keys + self.values


def paged_attention(
    query: mx.array,
    cache: PagedKVCache,
    layer: int,
    sinks: mx.array,
    metadata: MlxAttentionMetadata,
    *,
    scale: float,
    sliding_window: int | None,
) -> mx.array:
    """query [T, Hq, D] (its K/V already written) -> [T, Hq, D]; causal, windowed, with per-head sinks."""
    num_tokens, num_heads, head_dim = query.shape
    view = metadata.view(sliding_window)
    num_seqs, max_query_len = metadata.query_index.shape
    q = query[metadata.query_index].transpose(0, 2, 1, 3)  # [S, Hq, Qmax, D]
    k = cache.keys[layer][view.slots].transpose(0, 2, 1, 3)  # [S, Hkv, L, D]
    v = cache.values[layer][view.slots].transpose(0, 2, 1, 3)  # [S, Hkv, L, D]
    out = mx.fast.scaled_dot_product_attention(
        q, k.astype(q.dtype), v.astype(q.dtype), scale=scale, mask=view.mask, sinks=sinks.astype(q.dtype)
    )  # [S, Hq, Qmax, D]
    out = out.transpose(0, 2, 1, 3).reshape(num_seqs * max_query_len, num_heads, head_dim)
    return out[metadata.output_index]  # [T, Hq, D]

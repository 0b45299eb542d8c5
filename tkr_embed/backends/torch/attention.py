"""Paged attention for a flat, ragged batch: metadata, KV cache allocation, KV write and the attention op.

The KV cache of one layer is one tensor [2, num_blocks, block_size, num_kv_heads, head_dim] (0 = K,
1 = V). A sequence's position p lives in slot `block_table[p // block_size] * block_size + p % block_size`.
The functions here are the plain-PyTorch reference; faster backends replace `paged_attention` and
`write_kv_cache` with kernels of the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tkr_embed.backends.paging import AttentionInputError, new_token_slot_array  # noqa: F401 (AttentionInputError re-exported)
from tkr_embed.backends.torch.dispatch import use_kernels
from tkr_embed.backends.torch.host_copy import on_device
from tkr_embed.models.gpt_oss.config import GptOssConfig


@dataclass
class AttentionMetadata:
    """Where each token of a flat batch of S sequences (T tokens) reads and writes the paged KV cache."""

    slot_mapping: torch.Tensor  # [T] int64: cache slot of each new token
    query_start_loc: torch.Tensor  # [S+1] int32: the tokens of sequence i are [loc[i], loc[i+1])
    seq_lens: torch.Tensor  # [S] int32: tokens in the KV cache after this step
    block_tables: torch.Tensor  # [S, max_blocks] int32, padded with 0
    query_lens: list[int]  # CPU copies, for the reference loop and for kernels' grids
    seq_lens_list: list[int]
    start_positions: list[int]
    block_tables_list: list[list[int]]
    block_size: int
    max_query_len: int
    max_seq_len: int
    is_decode_only: bool
    # A mixed step lists its decodes first (the scheduler's order): those D one-token sequences go to the decode
    # kernel, the rest to the prefill kernel with tensors of their own (query starts from 0; fresh allocations,
    # so the kernels see the alignment they were compiled for, not a slice D rows in).
    num_leading_decodes: int = 0
    prefill_query_start_loc: torch.Tensor | None = None  # [S-D+1] int32
    prefill_seq_lens: torch.Tensor | None = None  # [S-D] int32
    prefill_block_tables: torch.Tensor | None = None  # [S-D, max_blocks] int32
    prefill_max_query_len: int = 0
    _contexts: dict = field(default_factory=dict, repr=False, compare=False)

    def context(self, row: int, sliding_window: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference loop's view of sequence `row`: its context's cache slots [L] and which of them each new
        token may not see [Q, L]. Every layer of a step with the same window reads the same, so it is built once."""
        key = (row, sliding_window)
        if key not in self._contexts:
            start_pos, query_len, seq_len = self.start_positions[row], self.query_lens[row], self.seq_lens_list[row]
            first = 0 if sliding_window is None else max(0, start_pos - sliding_window + 1)
            slots = _context_slots(self.block_tables_list[row], first, seq_len, self.block_size, device)
            q_pos = torch.arange(start_pos, start_pos + query_len, device=device).view(-1, 1)
            k_pos = torch.arange(first, seq_len, device=device).view(1, -1)
            visible = k_pos <= q_pos  # [Q, L]
            if sliding_window is not None:
                visible = visible & (k_pos > q_pos - sliding_window)
            self._contexts[key] = (slots, ~visible)
        return self._contexts[key]

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)


def build_attention_metadata(
    seqs: list[tuple[int, int, list[int]]], block_size: int, device: torch.device | str
) -> AttentionMetadata:
    """seqs = [(start_pos, num_new_tokens, block_table), ...] in batch order.

    Its cost grows with the batch's blocks (256 sequences of 2,048 tokens: 33k block ids a step), so the block tables
    go into one array row by row and a decode's one slot is computed directly, not through arrays of its own."""
    query_start = [0]
    seq_lens: list[int] = []
    max_blocks = max(len(bt) for _, _, bt in seqs)
    padded = np.zeros((len(seqs), max_blocks), dtype=np.int32)
    slots = np.empty(sum(num_new for _, num_new, _ in seqs), dtype=np.int64)
    for row, (start_pos, num_new, block_table) in enumerate(seqs):
        offset = query_start[-1]
        if num_new == 1 and len(block_table) * block_size > start_pos:
            slots[offset] = block_table[start_pos // block_size] * block_size + start_pos % block_size
        else:
            slots[offset : offset + num_new] = new_token_slot_array(start_pos, num_new, block_table, block_size)
        query_start.append(offset + num_new)
        seq_lens.append(start_pos + num_new)
        padded[row, : len(block_table)] = block_table
    query_lens = [n for _, n, _ in seqs]
    decodes = next((i for i, n in enumerate(query_lens) if n != 1), len(query_lens))  # leading one-token entries
    split = {}
    if 0 < decodes < len(query_lens):
        split = dict(
            num_leading_decodes=decodes,
            prefill_max_query_len=max(query_lens[decodes:]),
            prefill_query_start_loc=on_device([q - decodes for q in query_start[decodes:]], torch.int32, device),
            prefill_seq_lens=on_device(seq_lens[decodes:], torch.int32, device),
            prefill_block_tables=on_device(padded[decodes:], torch.int32, device),
        )
    return AttentionMetadata(
        slot_mapping=on_device(slots, torch.int64, device),
        query_start_loc=on_device(query_start, torch.int32, device),
        seq_lens=on_device(seq_lens, torch.int32, device),
        block_tables=on_device(padded, torch.int32, device),
        query_lens=query_lens,
        seq_lens_list=seq_lens,
        start_positions=[s for s, _, _ in seqs],
        block_tables_list=[bt for _, _, bt in seqs],  # the entries' own lists, only read
        block_size=block_size,
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
        is_decode_only=decodes == len(query_lens),
        **split,
    )


def allocate_kv_cache(
    config: GptOssConfig, num_blocks: int, block_size: int, *, dtype: torch.dtype, device: torch.device | str
) -> list[torch.Tensor]:
    """One zeroed tensor per layer: [2, num_blocks, block_size, num_kv_heads, head_dim]."""
    shape = (2, num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]


def write_kv_cache(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store the new tokens' K and V ([T, Hkv, D] each) at their slots."""
    num_slots = kv_cache.shape[1] * kv_cache.shape[2]
    flat = kv_cache.view(2, num_slots, kv_cache.shape[3], kv_cache.shape[4])  # [2, slots, Hkv, D]
    flat[0].index_copy_(0, slot_mapping, key.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, value.to(kv_cache.dtype))


def _context_slots(block_table: list[int], first: int, end: int, block_size: int, device: torch.device) -> torch.Tensor:
    positions = torch.arange(first, end, device=device)  # [L]
    blocks = torch.tensor(block_table, dtype=torch.int64, device=device)[positions // block_size]
    return blocks * block_size + positions % block_size  # [L]


def paged_attention(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    sinks: torch.Tensor,
    metadata: AttentionMetadata,
    *,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """Causal attention of each new token over its sequence's cached context, with per-head sinks.

    query [T, Hq, D]; the new tokens' K/V must already be in `kv_cache`. A query at position p sees
    keys at positions j <= p, and with a sliding window only those with j > p - sliding_window. The
    sink logit of each head joins the softmax denominator and carries no value. Returns [T, Hq, D].
    Scores and softmax are computed in float32. On CUDA the Triton kernels serve the call (decode-only
    batches: split-KV decode kernel; otherwise the chunked-prefill kernel over the ragged batch); they
    read only the metadata's tensors, so the call can be captured in a CUDA graph.
    """
    if use_kernels(query):
        return _paged_attention_kernels(query, kv_cache, sinks, metadata, scale=scale, sliding_window=sliding_window)
    num_tokens, num_heads, head_dim = query.shape
    num_kv_heads = kv_cache.shape[3]
    group = num_heads // num_kv_heads
    block_size = metadata.block_size
    num_slots = kv_cache.shape[1] * block_size
    flat = kv_cache.view(2, num_slots, num_kv_heads, head_dim)  # [2, slots, Hkv, D]
    output = torch.empty_like(query)
    sink_logits = sinks.float().view(num_kv_heads, group, 1, 1)  # [Hkv, G, 1, 1]
    token_start = 0
    for row, query_len in enumerate(metadata.query_lens):
        slots, hidden = metadata.context(row, sliding_window, query.device)
        keys = flat[0, slots].float().permute(1, 2, 0)  # [Hkv, D, L]
        values = flat[1, slots].float().transpose(0, 1)  # [Hkv, L, D]
        q = query[token_start : token_start + query_len].float()  # [Q, Hq, D]
        q = q.view(query_len, num_kv_heads, group, head_dim).permute(1, 2, 0, 3)  # [Hkv, G, Q, D]
        scores = torch.matmul(q, keys.unsqueeze(1)) * scale  # [Hkv, G, Q, L]
        scores = scores.masked_fill(hidden, float("-inf"))
        sink = sink_logits.expand(num_kv_heads, group, query_len, 1)
        logits = torch.cat((scores, sink), dim=-1)  # [Hkv, G, Q, L+1]
        probs = torch.softmax(logits, dim=-1)[..., :-1]  # sink carries no value
        out = torch.matmul(probs, values.unsqueeze(1))  # [Hkv, G, Q, D]
        out = out.permute(2, 0, 1, 3).reshape(query_len, num_heads, head_dim)  # [Q, Hq, D]
        output[token_start : token_start + query_len] = out.to(query.dtype)
        token_start += query_len
    return output


def _paged_attention_kernels(
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    sinks: torch.Tensor,
    metadata: AttentionMetadata,
    *,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    from tkr_embed.backends.torch.kernels.paged_attention import paged_decode_attention, paged_prefill_attention

    window = sliding_window or 0
    query = query.contiguous()  # [T, Hq, D]
    if metadata.is_decode_only:
        return paged_decode_attention(query, kv_cache, metadata.seq_lens, metadata.block_tables, sinks, window, scale)
    decodes = metadata.num_leading_decodes
    if decodes == 0:
        return paged_prefill_attention(
            query,
            kv_cache,
            metadata.query_start_loc,
            metadata.seq_lens,
            metadata.block_tables,
            sinks,
            window,
            scale,
            metadata.max_query_len,
        )
    # a mixed step: the decodes read each KV head once for all its query heads (the prefill kernel would give each
    # of them a whole block of query rows per query head); the chunks go to the prefill kernel
    out = torch.empty_like(query)
    paged_decode_attention(
        query[:decodes],
        kv_cache,
        metadata.seq_lens[:decodes],
        metadata.block_tables[:decodes],
        sinks,
        window,
        scale,
        out=out[:decodes],
    )
    paged_prefill_attention(
        query[decodes:],
        kv_cache,
        metadata.prefill_query_start_loc,
        metadata.prefill_seq_lens,
        metadata.prefill_block_tables,
        sinks,
        window,
        scale,
        metadata.prefill_max_query_len,
        out=out[decodes:],
    )
    return out

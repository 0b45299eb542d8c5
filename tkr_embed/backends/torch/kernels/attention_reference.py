"""Plain-torch paged attention with per-head sinks and a sliding window: the kernels' reference.

KV cache of one layer: [2, num_blocks, block_size, num_kv_heads, head_dim]; the slot of position p of
a sequence is block_table[p // block_size] * block_size + p % block_size. Queries of sequence s are
rows query_start_loc[s] .. query_start_loc[s+1]-1 and sit at the last positions of its seq_lens[s]
tokens. With a window W > 0, a query at position p sees keys p-W+1 .. p; otherwise all keys <= p.
The sink logit of each head joins the softmax denominator and adds nothing to the output.
"""

from __future__ import annotations

import torch


def write_kv_cache(kv_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store new keys/values: kv_cache [2, NB, B, Hkv, D], key/value [T, Hkv, D], slot_mapping [T]."""
    _, num_blocks, block_size, num_kv_heads, head_dim = kv_cache.shape
    slots = slot_mapping.to(torch.int64)
    kv_cache[0].view(num_blocks * block_size, num_kv_heads, head_dim).index_copy_(0, slots, key.to(kv_cache.dtype))
    kv_cache[1].view(num_blocks * block_size, num_kv_heads, head_dim).index_copy_(0, slots, value.to(kv_cache.dtype))


def paged_attention_reference(
    query: torch.Tensor,  # [T, Hq, D]
    kv_cache: torch.Tensor,  # [2, NB, B, Hkv, D]
    query_start_loc: torch.Tensor,  # [S+1]
    seq_lens: torch.Tensor,  # [S]
    block_tables: torch.Tensor,  # [S, max_blocks]
    sinks: torch.Tensor,  # [Hq]
    sliding_window: int,  # 0 = full causal
    scale: float,
) -> torch.Tensor:
    """Attention of every query row over its sequence's cached keys, in float32. -> [T, Hq, D]"""
    num_tokens, num_heads, head_dim = query.shape
    block_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    group = num_heads // num_kv_heads
    out = torch.empty(num_tokens, num_heads, head_dim, dtype=torch.float32, device=query.device)
    starts = query_start_loc.tolist()
    for seq, context_len in enumerate(seq_lens.tolist()):
        q = query[starts[seq] : starts[seq + 1]].float()  # [q, Hq, D]
        q_len = q.shape[0]
        positions = torch.arange(context_len, device=query.device)
        slots = block_tables[seq].long()[positions // block_size] * block_size + positions % block_size
        k = kv_cache[0].flatten(0, 1)[slots].float().repeat_interleave(group, dim=1)  # [L, Hq, D]
        v = kv_cache[1].flatten(0, 1)[slots].float().repeat_interleave(group, dim=1)  # [L, Hq, D]
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale  # [Hq, q, L]
        q_pos = torch.arange(context_len - q_len, context_len, device=query.device)[:, None]
        visible = positions[None, :] <= q_pos  # [q, L]
        if sliding_window > 0:
            visible &= positions[None, :] > q_pos - sliding_window
        scores = scores.masked_fill(~visible, float("-inf"))
        sink = sinks.float().view(num_heads, 1, 1).expand(num_heads, q_len, 1)  # [Hq, q, 1]
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]  # [Hq, q, L]
        out[starts[seq] : starts[seq + 1]] = torch.einsum("hqk,khd->qhd", probs, v)
    return out.to(query.dtype)

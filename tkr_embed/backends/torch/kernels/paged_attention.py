"""Triton paged attention with per-head sinks and a sliding window (semantics: attention_reference).

Decode: one query token per sequence. Each program takes one (sequence, KV head, key split) and all
the query heads that share that KV head, so every key/value row is read once per step; partial
softmax states of the splits are merged by a second small kernel, which also adds the sink. With one
split (from ~33 sequences on a 132-SM card) the program adds the sink and writes the output itself:
no partial states, no merge launch (24 launches a step; H100, 64 sequences: 0.14 ms of a 7.6 ms step).
Prefill (chunked): one program per (query block, sequence, query head) over the paged keys that
its queries can see (causal, and the window on sliding layers).
Scores are kept in base 2 (scale * log2(e)) so the exponentials are exp2.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tkr_embed.backends.torch.kernels.pdl import pdl_launch, wait_for_previous_kernel

LOG2E = tl.constexpr(1.4426950408889634)
NEG_BIG = tl.constexpr(-1.0e30)  # finite "minus infinity": empty splits merge to weight 0 without NaNs
TARGET_PROGRAMS = 264  # about two programs per multiprocessor on a 132-SM Hopper card
PREFILL_TILE = (64, 64, 4, 2)  # the prefill kernel's query rows and keys a block, warps, pipeline stages
DECODE_BLOCK_N = (64, 64)  # keys a decode loop step: full-context layers, sliding-window layers
DECODE_WARPS_STAGES = (4, 2)  # the decode kernel's warps and pipeline stages


# The block table's row stride is its width, the longest sequence's block count in an eager step: not
# specialized on (Triton would compile another binary for a width of 1 or a multiple of 16 mid-serving).
@triton.jit(do_not_specialize=["stride_bt"])
def _decode_split_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    part_m_ptr,
    part_l_ptr,
    part_acc_ptr,  # [S, Hq, NS], [S, Hq, NS], [S, Hq, NS, D] fp32
    sinks_ptr,
    out_ptr,  # used when NUM_SPLITS == 1 (no merge)
    scale_log2,
    stride_qs,
    stride_qh,
    stride_slot,
    stride_bt,
    stride_os,
    stride_oh,
    NUM_HEADS: tl.constexpr,
    SLIDING_WINDOW: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    PDL: tl.constexpr,
):
    wait_for_previous_kernel(PDL)
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(seq_lens_ptr + seq)
    start = 0
    if SLIDING_WINDOW > 0:
        start = tl.maximum(context_len - SLIDING_WINDOW, 0)
    per_split = tl.cdiv(tl.cdiv(context_len - start, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = start + split * per_split
    hi = tl.minimum(lo + per_split, context_len)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    head_valid = offs_g < GROUP
    heads = kv_head * GROUP + offs_g  # [GP]
    q = tl.load(
        q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :], mask=head_valid[:, None], other=0.0
    )  # [GP, D]

    m_i = tl.full((GROUP_PAD,), NEG_BIG, tl.float32)
    l_i = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for k0 in range(lo, hi, BLOCK_N):
        kpos = k0 + tl.arange(0, BLOCK_N)
        key_valid = kpos < hi
        page = tl.load(table + kpos // PAGE_SIZE, mask=key_valid, other=0).to(tl.int64)
        slot = page * PAGE_SIZE + kpos % PAGE_SIZE  # [BN]
        kv_offs = slot[:, None] * stride_slot + kv_head * HEAD_DIM + offs_d[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=key_valid[:, None], other=0.0)  # [BN, D]
        v = tl.load(v_cache_ptr + kv_offs, mask=key_valid[:, None], other=0.0)  # [BN, D]
        scores = tl.dot(q, tl.trans(k)) * scale_log2  # [GP, BN]
        scores = tl.where(key_valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        p = tl.exp2(scores - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if NUM_SPLITS == 1:  # the merge kernel's arithmetic for one split
        sink = tl.load(sinks_ptr + heads, mask=head_valid, other=0.0).to(tl.float32) * LOG2E
        m = tl.maximum(m_i, sink)
        weight = tl.exp2(m_i - m)
        denom = l_i * weight + tl.exp2(sink - m)
        out = acc * weight[:, None] / denom[:, None]
        tl.store(
            out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=head_valid[:, None],
        )
    else:
        part = (seq * NUM_HEADS + heads) * NUM_SPLITS + split  # [GP]
        tl.store(part_m_ptr + part, m_i, mask=head_valid)
        tl.store(part_l_ptr + part, l_i, mask=head_valid)
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=head_valid[:, None])


@triton.jit
def _decode_merge_kernel(
    part_m_ptr,
    part_l_ptr,
    part_acc_ptr,
    sinks_ptr,
    out_ptr,
    stride_os,
    stride_oh,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    PDL: tl.constexpr,
):
    wait_for_previous_kernel(PDL)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, NUM_SPLITS)
    offs_d = tl.arange(0, HEAD_DIM)
    base = (seq * NUM_HEADS + head) * NUM_SPLITS
    m_s = tl.load(part_m_ptr + base + offs_s)  # [NS]
    l_s = tl.load(part_l_ptr + base + offs_s)  # [NS]
    acc_s = tl.load(part_acc_ptr + (base + offs_s)[:, None] * HEAD_DIM + offs_d[None, :])  # [NS, D]
    sink = tl.load(sinks_ptr + head).to(tl.float32) * LOG2E
    m = tl.maximum(tl.max(m_s, 0), sink)
    weight = tl.exp2(m_s - m)  # [NS]
    denom = tl.sum(l_s * weight, 0) + tl.exp2(sink - m)
    out = tl.sum(acc_s * weight[:, None], 0) / denom  # [D]
    tl.store(out_ptr + seq * stride_os + head * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _prefill_block(
    q,
    k0,
    m_i,
    l_i,
    acc,
    table,
    k_cache_ptr,
    v_cache_ptr,
    q_pos,
    hi,
    kv_head,
    scale_log2,
    stride_slot,
    SLIDING_WINDOW: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
):
    """The running softmax over keys k0 .. k0 + BLOCK_N (MASKED: causal, window and end of the keys applied)."""
    offs_d = tl.arange(0, HEAD_DIM)
    kpos = k0 + tl.arange(0, BLOCK_N)
    key_valid = kpos < hi
    page = tl.load(table + kpos // PAGE_SIZE, mask=key_valid, other=0).to(tl.int64)
    slot = page * PAGE_SIZE + kpos % PAGE_SIZE
    kv_offs = slot[:, None] * stride_slot + kv_head * HEAD_DIM + offs_d[None, :]
    k = tl.load(k_cache_ptr + kv_offs, mask=key_valid[:, None], other=0.0)  # [BN, D]
    v = tl.load(v_cache_ptr + kv_offs, mask=key_valid[:, None], other=0.0)  # [BN, D]
    scores = tl.dot(q, tl.trans(k)) * scale_log2  # [BM, BN]
    if MASKED:
        visible = (kpos[None, :] <= q_pos[:, None]) & key_valid[None, :]
        if SLIDING_WINDOW > 0:
            visible = visible & (kpos[None, :] > q_pos[:, None] - SLIDING_WINDOW)
        scores = tl.where(visible, scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    p = tl.exp2(scores - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit(do_not_specialize=["stride_bt"])  # as the decode kernel's
def _prefill_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    sinks_ptr,
    out_ptr,
    scale_log2,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_slot,
    stride_bt,
    SLIDING_WINDOW: tl.constexpr,
    PAGE_SIZE: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    block_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    if block_m * BLOCK_M >= q_len:
        return
    context_len = tl.load(seq_lens_ptr + seq)
    first_pos = context_len - q_len  # position of query row 0
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_valid = offs_m < q_len
    q_pos = first_pos + offs_m  # [BM]
    rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=row_valid[:, None], other=0.0
    )  # [BM, D]
    kv_head = head // GROUP

    hi = tl.minimum(first_pos + (block_m + 1) * BLOCK_M, context_len)  # one past the last visible key
    lo = 0
    if SLIDING_WINDOW > 0:
        lo = tl.maximum(first_pos + block_m * BLOCK_M - SLIDING_WINDOW + 1, 0)
        lo = lo // BLOCK_N * BLOCK_N

    # the sink starts the running softmax: m = sink, l = exp2(0) = 1, nothing added to acc
    m_i = tl.zeros((BLOCK_M,), tl.float32) + tl.load(sinks_ptr + head).to(tl.float32) * LOG2E
    l_i = tl.full((BLOCK_M,), 1.0, tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    # causal layers: the key blocks before the diagonal are visible to every row of the block (no mask)
    mid = lo
    if SLIDING_WINDOW == 0:
        mid = tl.minimum((first_pos + block_m * BLOCK_M + 1) // BLOCK_N * BLOCK_N, hi)
        for k0 in range(lo, mid, BLOCK_N):
            m_i, l_i, acc = _prefill_block(
                q,
                k0,
                m_i,
                l_i,
                acc,
                table,
                k_cache_ptr,
                v_cache_ptr,
                q_pos,
                hi,
                kv_head,
                scale_log2,
                stride_slot,
                SLIDING_WINDOW,
                PAGE_SIZE,
                HEAD_DIM,
                BLOCK_N,
                False,
            )
    for k0 in range(mid, hi, BLOCK_N):
        m_i, l_i, acc = _prefill_block(
            q,
            k0,
            m_i,
            l_i,
            acc,
            table,
            k_cache_ptr,
            v_cache_ptr,
            q_pos,
            hi,
            kv_head,
            scale_log2,
            stride_slot,
            SLIDING_WINDOW,
            PAGE_SIZE,
            HEAD_DIM,
            BLOCK_N,
            True,
        )
    out = acc / l_i[:, None]
    tl.store(
        out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=row_valid[:, None],
    )


def decode_num_splits(num_seqs: int, num_kv_heads: int, max_splits: int = 32) -> int:
    """Key splits per (sequence, KV head) so that a decode step fills the card (a power of two)."""
    wanted = max(1, TARGET_PROGRAMS // max(1, num_seqs * num_kv_heads))
    return min(max_splits, 1 << (wanted - 1).bit_length())


def paged_decode_attention(
    query: torch.Tensor,  # [S, Hq, D] one token per sequence
    kv_cache: torch.Tensor,  # [2, NB, B, Hkv, D]
    seq_lens: torch.Tensor,  # [S] int32, including the new token
    block_tables: torch.Tensor,  # [S, max_blocks] int32
    sinks: torch.Tensor,  # [Hq]
    sliding_window: int,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention over the paged cache (the new token's KV already written). -> [S, Hq, D] (into `out` if
    given: rows of a larger output)"""
    num_seqs, num_heads, head_dim = query.shape
    page_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    group = num_heads // num_kv_heads
    splits = num_splits or decode_num_splits(num_seqs, num_kv_heads)
    out = torch.empty_like(query) if out is None else out
    if splits == 1:
        part_m = part_l = part_acc = out  # not written
    else:
        part_m = torch.empty(num_seqs, num_heads, splits, dtype=torch.float32, device=query.device)
        part_l = torch.empty_like(part_m)
        part_acc = torch.empty(num_seqs, num_heads, splits, head_dim, dtype=torch.float32, device=query.device)
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    _decode_split_kernel[(num_seqs, num_kv_heads, splits)](
        query,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        part_m,
        part_l,
        part_acc,
        sinks,
        out,
        scale * LOG2E.value,
        query.stride(0),
        query.stride(1),
        k_cache.stride(1),
        block_tables.stride(0),
        out.stride(0),
        out.stride(1),
        NUM_HEADS=num_heads,
        SLIDING_WINDOW=sliding_window,
        PAGE_SIZE=page_size,
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=DECODE_BLOCK_N[1 if sliding_window else 0],
        NUM_SPLITS=splits,
        num_warps=DECODE_WARPS_STAGES[0],
        num_stages=DECODE_WARPS_STAGES[1],
        **pdl_launch(query),
    )
    if splits > 1:
        _decode_merge_kernel[(num_seqs, num_heads)](
            part_m,
            part_l,
            part_acc,
            sinks,
            out,
            out.stride(0),
            out.stride(1),
            NUM_HEADS=num_heads,
            HEAD_DIM=head_dim,
            NUM_SPLITS=splits,
            num_warps=1,
            **pdl_launch(query),
        )
    return out


def paged_prefill_attention(
    query: torch.Tensor,  # [T, Hq, D]
    kv_cache: torch.Tensor,  # [2, NB, B, Hkv, D]
    query_start_loc: torch.Tensor,  # [S+1] int32
    seq_lens: torch.Tensor,  # [S] int32
    block_tables: torch.Tensor,  # [S, max_blocks] int32
    sinks: torch.Tensor,  # [Hq]
    sliding_window: int,
    scale: float,
    max_query_len: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chunked-prefill attention (the chunk's KV already written to the cache). -> [T, Hq, D] (into `out` if given)"""
    num_tokens, num_heads, head_dim = query.shape
    page_size, num_kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    num_seqs = seq_lens.shape[0]
    block_m, block_n, warps, stages = PREFILL_TILE
    out = torch.empty_like(query) if out is None else out
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    grid = (math.ceil(max_query_len / block_m), num_seqs, num_heads)
    _prefill_kernel[grid](
        query,
        k_cache,
        v_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        sinks,
        out,
        scale * LOG2E.value,
        query.stride(0),
        query.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(1),
        block_tables.stride(0),
        SLIDING_WINDOW=sliding_window,
        PAGE_SIZE=page_size,
        GROUP=num_heads // num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=warps,
        num_stages=stages,
    )
    return out

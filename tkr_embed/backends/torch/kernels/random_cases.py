"""Random inputs of the gpt-oss-20b shape (or smaller) for the kernel checks and benchmarks.

Everything is drawn on the target device from a seeded generator of that device, so 20b-sized
expert weights take milliseconds on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tkr_embed.backends.torch.kernels.moe_weights import MoeWeights
from tkr_embed.backends.torch.kernels.mxfp4_reference import random_mxfp4, route_topk
from tkr_embed.engine.constraints import mask_words


@dataclass
class MoeCase:
    hidden: torch.Tensor  # [T, D] bf16
    topk_ids: torch.Tensor  # [T, k] int32
    topk_weights: torch.Tensor  # [T, k] fp32
    weights: MoeWeights


def make_moe_weights(
    *, num_experts: int = 32, hidden: int = 2880, intermediate: int = 2880, seed: int = 0, device: str = "cuda"
) -> MoeWeights:
    gen = torch.Generator(device=device).manual_seed(seed)
    gu_blocks, gu_scales = random_mxfp4(num_experts, 2 * intermediate, hidden, generator=gen, device=device)
    dn_blocks, dn_scales = random_mxfp4(num_experts, hidden, intermediate, generator=gen, device=device)
    gu_bias = torch.randn(num_experts, 2 * intermediate, generator=gen, device=device).to(torch.bfloat16)
    dn_bias = torch.randn(num_experts, hidden, generator=gen, device=device).to(torch.bfloat16)
    return MoeWeights(gu_blocks, gu_scales, gu_bias, dn_blocks, dn_scales, dn_bias)


def make_moe_case(
    num_tokens: int,
    *,
    num_experts: int = 32,
    hidden: int = 2880,
    intermediate: int = 2880,
    top_k: int = 4,
    seed: int = 0,
    device: str = "cuda",
    weights: MoeWeights | None = None,
) -> MoeCase:
    if weights is None:
        weights = make_moe_weights(
            num_experts=num_experts, hidden=hidden, intermediate=intermediate, seed=seed, device=device
        )
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    x = torch.randn(num_tokens, hidden, generator=gen, device=device).to(torch.bfloat16)
    ids, probs = route_topk(torch.randn(num_tokens, num_experts, generator=gen, device=device), top_k)
    return MoeCase(x, ids, probs, weights)


@dataclass
class AttentionCase:
    kv_cache: torch.Tensor  # [2, NB, B, Hkv, D] bf16
    block_tables: torch.Tensor  # [S, max_blocks] int32
    seq_lens: torch.Tensor  # [S] int32
    sinks: torch.Tensor  # [Hq] fp32


def make_attention_case(
    seq_lens: list[int],
    *,
    num_heads: int = 64,
    num_kv_heads: int = 8,
    head_dim: int = 64,
    block_size: int = 16,
    seed: int = 0,
    device: str = "cuda",
) -> AttentionCase:
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-length // block_size) for length in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    order = torch.randperm(num_blocks, generator=gen)  # scattered pages catch indexing mistakes
    tables = torch.zeros(len(seq_lens), max(blocks_per_seq), dtype=torch.int32)
    used = 0
    for seq, count in enumerate(blocks_per_seq):
        tables[seq, :count] = order[used : used + count]
        used += count
    dev_gen = torch.Generator(device=device).manual_seed(seed)
    kv = torch.randn(2, num_blocks, block_size, num_kv_heads, head_dim, generator=dev_gen, device=device)
    sinks = torch.randn(num_heads, generator=dev_gen, device=device)
    return AttentionCase(
        kv.to(torch.bfloat16), tables.to(device), torch.tensor(seq_lens, dtype=torch.int32, device=device), sinks
    )


@dataclass
class MaskCase:
    graph_output: torch.Tensor  # [S + 1, V] fp32: a padded graph output
    logits: torch.Tensor  # [S, V]: its first rows
    words: torch.Tensor  # [S, ceil(V / 32)] int32 packed bitmask
    single: dict[int, int]  # row -> the one id it allows


def make_mask_case(rows: int, vocab: int, *, seed: int = 5, device: str = "cuda") -> MaskCase:
    """Random logits and bitmask words, except row 1 (only the last id, the vocabulary's last bit), row 2 (only
    id 3 * 32 + 31, a word's sign bit) and, with `rows` > 3, row 3 (every id)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    graph_output = torch.randn(rows + 1, vocab, generator=gen, device=device)
    words = torch.randint(
        -(2**31), 2**31 - 1, (rows, mask_words(vocab)), generator=gen, device=device, dtype=torch.int32
    )
    single = {1: vocab - 1, 2: 3 * 32 + 31}
    for row, token_id in single.items():
        words[row] = 0
        bit = token_id % 32
        words[row, token_id // 32] = -(2**31) if bit == 31 else 1 << bit  # bit 31 is the int32's sign
    if rows > 3:
        words[3] = -1
    return MaskCase(graph_output, graph_output[:rows], words, single)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64."""
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm())

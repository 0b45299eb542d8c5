"""How many KV blocks a byte budget buys: the arithmetic every backend shares (no framework imports)."""

from __future__ import annotations

CPU_KV_CACHE_BYTES = 1 << 30          # default KV budget without an accelerator: 1 GiB ...
CPU_KV_CACHE_MAX_SEQS = 64            # ... but no more than 64 full-length sequences need


def kv_bytes_per_block(*, num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, itemsize: int) -> int:
    """K and V of `block_size` tokens across every layer."""
    return num_layers * block_size * 2 * num_kv_heads * head_dim * itemsize


def host_kv_cache_bytes(*, context_len: int, block_size: int, bytes_per_block: int) -> int:
    """The default budget on a CPU: 1 GiB, or less when 64 full-length sequences need less."""
    blocks_per_seq = -(-context_len // block_size)
    return min(CPU_KV_CACHE_BYTES, CPU_KV_CACHE_MAX_SEQS * blocks_per_seq * bytes_per_block)

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


def step_activation_bytes(*, num_tokens: int, hidden_size: int, intermediate_size: int, experts_per_token: int,
                          num_heads: int, num_kv_heads: int, head_dim: int, itemsize: int = 2,
                          scratch_bytes: int = 0) -> int:
    """A generous estimate of the activations of an eager forward over `num_tokens` tokens at its peak: the MoE
    of a large batch holds, per (token, expert) pair, the gathered input row, the gate_up output and the
    SwiGLU result (D + 2I + I values); beside it the attention's q/k/v and output and a few residual-stream
    rows per token; plus `scratch_bytes` (the prefill MoE's dequantization scratch)."""
    pair = experts_per_token * (hidden_size + 3 * intermediate_size)
    attention = (num_heads + 2 * num_kv_heads) * head_dim + num_heads * head_dim
    return num_tokens * (pair + attention + 8 * hidden_size) * itemsize + scratch_bytes


def device_kv_cache_bytes(*, free_bytes: int, fraction: float, reserve_bytes: int, step_bytes: int,
                          other_bytes: int = 0) -> int:
    """The KV budget on an accelerator: `fraction` of the free memory less a fixed reserve, but never so much
    that the largest step's activations (`step_bytes`) no longer fit beside it; less `other_bytes` (buffers
    allocated after the cache)."""
    return max(0, min(int(free_bytes * fraction) - reserve_bytes, free_bytes - step_bytes) - other_bytes)

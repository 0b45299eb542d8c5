"""How many KV blocks a byte budget buys: the arithmetic every backend shares (no framework imports)."""

from __future__ import annotations

from collections.abc import Callable

CPU_KV_CACHE_BYTES = 1 << 30  # default KV budget without an accelerator: 1 GiB ...
CPU_KV_CACHE_MAX_SEQS = 64  # ... but no more than 64 full-length sequences need
# a default max_num_seqs is lowered until each running sequence has this much KV cache to grow into
KV_TOKENS_PER_DEFAULT_SEQ = 1024


def kv_bytes_per_block(*, num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, itemsize: int) -> int:
    """K and V of `block_size` tokens across every layer."""
    return num_layers * block_size * 2 * num_kv_heads * head_dim * itemsize


def kv_sized_max_num_seqs(default: int, *, kv_tokens: int, floor: int) -> int:
    """A device's default max_num_seqs, lowered so that each running sequence has KV_TOKENS_PER_DEFAULT_SEQ tokens
    of cache (fewer would preempt sequences all the time), but never below `floor` (the engine's default)."""
    return max(min(default, floor), min(default, kv_tokens // KV_TOKENS_PER_DEFAULT_SEQ))


def host_kv_cache_bytes(*, context_len: int, block_size: int, bytes_per_block: int) -> int:
    """The default budget on a CPU: 1 GiB, or less when 64 full-length sequences need less."""
    blocks_per_seq = -(-context_len // block_size)
    return min(CPU_KV_CACHE_BYTES, CPU_KV_CACHE_MAX_SEQS * blocks_per_seq * bytes_per_block)


def step_activation_bytes(
    *,
    num_tokens: int,
    hidden_size: int,
    intermediate_size: int,
    experts_per_token: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    itemsize: int = 2,
    moe_tokens: int | None = None,
    scratch_bytes: int = 0,
) -> int:
    """An estimate of the activations of an eager forward over `num_tokens` tokens at its peak. The MoE of a
    large batch (`moe_tokens` of them at a time) holds, per (token, expert) pair, the gathered input row, the
    gate_up output and the SwiGLU result (D + 3I values). Per token of the step: the attention's q/k/v and
    output, the per-pair results twice (the MoE's chunks and their concatenation) and eight residual-stream
    rows, which is also the slack for the allocator's fragments. Plus `scratch_bytes` (the prefill MoE's
    dequantization scratch)."""
    moe = min(num_tokens, moe_tokens or num_tokens) * experts_per_token * (hidden_size + 3 * intermediate_size)
    attention = (num_heads + 2 * num_kv_heads) * head_dim + num_heads * head_dim
    per_token = attention + 2 * experts_per_token * hidden_size + 8 * hidden_size
    return (moe + num_tokens * per_token) * itemsize + scratch_bytes


def model_step_activation_bytes(config, *, num_tokens: int, itemsize: int = 2, **kwargs) -> int:
    """`step_activation_bytes` for a model config's shape (a GptOssConfig, read by attribute); `kwargs`:
    `moe_tokens`, `scratch_bytes`."""
    return step_activation_bytes(
        num_tokens=num_tokens,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        experts_per_token=config.num_experts_per_tok,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        itemsize=itemsize,
        **kwargs,
    )


def decode_graph_bytes(
    *, max_batch: int, vocab_size: int, max_blocks_per_seq: int, step_bytes: int, itemsize: int = 2
) -> int:
    """An estimate of the device memory the decode graphs hold, for graphs that share their output and block
    tables (`backends/torch/cuda_decode.py`): the float32 logits and block tables of the largest batch, and the
    graphs' pool, which holds the largest step's activations (`step_bytes`) and its logits in the model dtype."""
    logits = max_batch * vocab_size * (4 + itemsize)
    return logits + max_batch * max_blocks_per_seq * 4 + step_bytes


def device_kv_cache_bytes(
    *, free_bytes: int, fraction: float, reserve_bytes: int, step_bytes: int, other_bytes: int = 0
) -> int:
    """The KV budget on an accelerator: `fraction` of the free memory less a fixed reserve, but never so much
    that the largest step's activations (`step_bytes`) no longer fit beside it; less `other_bytes` (buffers
    allocated after the cache)."""
    return max(0, min(int(free_bytes * fraction) - reserve_bytes, free_bytes - step_bytes) - other_bytes)


# A step larger than the engine's budget, for when nothing decodes, gets room only if the KV cache keeps this share
# (gpt-oss-20b on an 80 GB card loses nothing to 32,768-token steps; gpt-oss-120b would lose a third of its cache)
IDLE_STEP_MIN_KV_SHARE = 0.9


def blocks_with_step_room(
    blocks_for: Callable[[int], int], step_tokens: int, idle_step_tokens: int | None
) -> tuple[int, int]:
    """(KV blocks, the largest step left room for): `blocks_for(tokens)` is the cache that leaves room for steps of
    that many tokens. The idle step (larger than `step_tokens`) is taken while the cache keeps IDLE_STEP_MIN_KV_SHARE
    of the blocks it has beside steps of `step_tokens`; otherwise steps stay within `step_tokens`."""
    blocks = blocks_for(step_tokens)
    if idle_step_tokens is None or idle_step_tokens <= step_tokens:
        return blocks, step_tokens
    with_idle = blocks_for(idle_step_tokens)
    if with_idle >= IDLE_STEP_MIN_KV_SHARE * blocks:
        return with_idle, idle_step_tokens
    return blocks, step_tokens

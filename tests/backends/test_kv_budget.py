"""The KV budget both backends share: blocks a byte budget buys, and the CPU default."""

from __future__ import annotations

from pathlib import Path

from tkr_embed.backends.factory import create_runner
from tkr_embed.backends.kv_budget import (
    CPU_KV_CACHE_BYTES,
    blocks_with_step_room,
    device_kv_cache_bytes,
    host_kv_cache_bytes,
    kv_bytes_per_block,
    kv_sized_max_num_seqs,
    step_activation_bytes,
)

GIB = 1 << 30
SHAPE_20B = dict(
    hidden_size=2880,
    intermediate_size=2880,
    experts_per_token=4,
    num_heads=64,
    num_kv_heads=8,
    head_dim=64,
    scratch_bytes=GIB,
)


def test_bytes_per_block_counts_k_and_v_of_every_layer() -> None:
    # gpt-oss-20b, bf16, 16-token blocks: 24 layers x 16 tokens x (K+V) x 8 heads x 64 dims x 2 bytes
    assert kv_bytes_per_block(num_layers=24, num_kv_heads=8, head_dim=64, block_size=16, itemsize=2) == 786_432


def test_cpu_default_is_64_full_sequences_capped_at_one_gib() -> None:
    small = kv_bytes_per_block(num_layers=4, num_kv_heads=2, head_dim=16, block_size=16, itemsize=4)
    assert host_kv_cache_bytes(context_len=4096, block_size=16, bytes_per_block=small) == 64 * 256 * small
    large = kv_bytes_per_block(num_layers=24, num_kv_heads=8, head_dim=64, block_size=16, itemsize=4)
    assert host_kv_cache_bytes(context_len=131_072, block_size=16, bytes_per_block=large) == CPU_KV_CACHE_BYTES


def test_both_cpu_backends_size_the_demo_cache_alike(demo_model_dir: Path) -> None:
    torch_runner = create_runner(demo_model_dir, device="cpu")
    mlx_runner = create_runner(demo_model_dir, device="mlx", quantization="none")
    # 4,096-token context / 16-token blocks = 256 blocks a sequence, 64 sequences
    assert torch_runner.info.num_kv_blocks == mlx_runner.info.num_kv_blocks == 64 * 256


def test_the_device_cache_leaves_room_for_the_largest_step() -> None:
    """An H100 holding gpt-oss-20b has ~64 GB free: with 65,536-token steps (max_num_batched_tokens) the 10% the
    fraction leaves and the 1 GiB reserve do not hold a step's MoE activations, so the cache shrinks until the
    step fits beside it (else the MoE of the first such step runs out of memory)."""
    free, logits = 64 * 10**9, 2 * 64 * 201_088 * 4
    big_step = step_activation_bytes(num_tokens=65_536, **SHAPE_20B)
    assert big_step > free - (int(free * 0.9) - GIB)
    cache = device_kv_cache_bytes(
        free_bytes=free, fraction=0.9, reserve_bytes=GIB, step_bytes=big_step, other_bytes=logits
    )
    assert cache + big_step + logits == free
    # at the default 8,192-token steps the fraction governs: also for the 120b on an 80 GB H100, whose
    # ~17.7 GB free after the weights give a 13.76 GiB cache
    for free in (64 * 10**9, 17_700_000_000):
        step = step_activation_bytes(num_tokens=8192, **SHAPE_20B)
        assert (
            device_kv_cache_bytes(free_bytes=free, fraction=0.9, reserve_bytes=GIB, step_bytes=step, other_bytes=logits)
            == int(free * 0.9) - GIB - logits
        )
    assert device_kv_cache_bytes(free_bytes=GIB, fraction=0.9, reserve_bytes=GIB, step_bytes=2 * GIB) == 0


def test_step_activations_grow_with_the_step_and_the_moe_chunk() -> None:
    no_scratch = {**SHAPE_20B, "scratch_bytes": 0}
    one = step_activation_bytes(num_tokens=1024, **no_scratch)
    assert step_activation_bytes(num_tokens=4096, **no_scratch) == 4 * one
    # per token: the MoE's 4 (token, expert) pairs x (2,880 + 3 x 2,880) bf16 values (92 KB) and the rest
    moe = 4 * (2880 + 3 * 2880) * 2
    assert moe < one / 1024 < 3 * moe
    # the prefill MoE takes at most moe_tokens at a time: beyond them only the per-token rest grows
    capped = step_activation_bytes(num_tokens=65_536, moe_tokens=32_768, **no_scratch)
    assert capped == step_activation_bytes(num_tokens=65_536, **no_scratch) - 32_768 * moe


def test_a_step_without_decodes_gets_room_only_where_it_costs_little_cache() -> None:
    """engine.max_num_batched_tokens_idle (32,768 beside 8,192-token steps on CUDA): gpt-oss-20b on an 80 GB card
    (~64 GB free after the weights) keeps its whole cache, as the memory fraction governs either way; gpt-oss-120b
    (~17.7 GB free) would lose about a third of it (13.76 -> 9.22 GiB on an H100), so its
    steps stay within 8,192 tokens and its cache keeps its size."""
    block = kv_bytes_per_block(num_layers=24, num_kv_heads=8, head_dim=64, block_size=16, itemsize=2)
    logits = 2 * 64 * 201_088 * 4

    def blocks_for(free: int):
        def blocks(tokens: int) -> int:
            step = step_activation_bytes(num_tokens=tokens, moe_tokens=32_768, **SHAPE_20B)
            return (
                device_kv_cache_bytes(
                    free_bytes=free, fraction=0.85, reserve_bytes=GIB, step_bytes=step, other_bytes=logits
                )
                // block
            )

        return blocks

    whole_20b = blocks_for(64 * 10**9)(8192)
    assert blocks_with_step_room(blocks_for(64 * 10**9), 8192, 32_768) == (whole_20b, 32_768)
    small = blocks_for(17_700_000_000)
    assert small(32_768) < 0.75 * small(8192)
    assert blocks_with_step_room(small, 8192, 32_768) == (small(8192), 8192)
    assert blocks_with_step_room(small, 8192, 9000) == (small(9000), 9000)  # a little larger: it fits
    assert blocks_with_step_room(small, 8192, None) == (small(8192), 8192)


def test_a_default_max_num_seqs_leaves_each_sequence_1024_tokens_of_cache_but_not_below_the_floor() -> None:
    # the 20b on an 80 GB card: ~1.1 M tokens of KV keep the CUDA default of 256
    assert kv_sized_max_num_seqs(256, kv_tokens=1_100_000, floor=64) == 256
    assert kv_sized_max_num_seqs(256, kv_tokens=150_000, floor=64) == 146
    assert kv_sized_max_num_seqs(256, kv_tokens=20_000, floor=64) == 64  # never below the engine's default
    assert kv_sized_max_num_seqs(32, kv_tokens=1_000, floor=64) == 32  # a default below the floor is not raised

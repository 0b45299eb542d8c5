"""The KV budget both backends share: blocks a byte budget buys, and the CPU default."""

from __future__ import annotations

from pathlib import Path

from tkr_embed.backends.factory import create_runner
from tkr_embed.backends.kv_budget import CPU_KV_CACHE_BYTES, host_kv_cache_bytes, kv_bytes_per_block


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

"""Which decode batch sizes a CUDA runner captures, and the memory the KV budget sets aside for them (no GPU)."""

from __future__ import annotations

import pytest

from tkr_embed.backends.kv_budget import decode_graph_bytes
from tkr_embed.backends.torch.cuda_decode import MAX_GRAPH_BATCH, decode_graph_batch_sizes, graph_memory_estimate
from tkr_embed.models.gpt_oss.config import GptOssConfig


def test_sizes_step_by_8_to_64_then_by_16_and_end_at_max_num_seqs() -> None:
    assert decode_graph_batch_sizes(256) == (
        *(1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64),
        *(80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256),
    )
    assert decode_graph_batch_sizes(None) == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)  # the engine's default
    assert decode_graph_batch_sizes(16) == (1, 2, 4, 8, 16)
    assert decode_graph_batch_sizes(3) == (1, 2, 3)
    assert decode_graph_batch_sizes(1) == (1,)
    assert decode_graph_batch_sizes(100)[-3:] == (80, 96, 100)
    assert decode_graph_batch_sizes(320)[-4:] == (240, 256, 288, 320)


@pytest.mark.parametrize("max_batch", [1, 7, 64, 65, 100, 256, 300, 512, 1000])
def test_every_batch_has_a_graph_padded_by_at_most_7_rows_to_64_15_to_256_31_above(max_batch: int) -> None:
    sizes = decode_graph_batch_sizes(max_batch)
    assert sizes[-1] == max_batch
    for batch in range(1, max_batch + 1):
        padded = min(size for size in sizes if size >= batch)
        assert padded - batch <= (7 if padded <= 64 else 15 if padded <= 256 else 31)


def test_batches_past_the_largest_graph_run_eager() -> None:
    assert decode_graph_batch_sizes(5000)[-1] == MAX_GRAPH_BATCH == 1024


def test_the_graph_budget_grows_with_the_largest_batch_not_the_number_of_sizes() -> None:
    """The graphs share their logits and block tables: the budget is the largest batch's, whatever the sizes below."""
    config = GptOssConfig.gpt_oss_20b()
    full = graph_memory_estimate(config, decode_graph_batch_sizes(256), max_blocks_per_seq=8192)
    assert full == graph_memory_estimate(config, (1, 256), max_blocks_per_seq=8192)
    assert graph_memory_estimate(config, (), max_blocks_per_seq=8192) == 0
    logits = 256 * config.vocab_size * (4 + 2)  # float32 output, and the bf16 product in the pool
    assert logits + 256 * 8192 * 4 < full < logits + 256 * 8192 * 4 + (100 << 20)
    assert decode_graph_bytes(max_batch=2, vocab_size=10, max_blocks_per_seq=3, step_bytes=7) == 2 * 10 * 6 + 24 + 7

"""Paged attention metadata, KV cache layout, and the random-weight model builder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tkr_embed.backends.torch.attention import (
    AttentionInputError,
    allocate_kv_cache,
    build_attention_metadata,
    write_kv_cache,
)
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.demo import DEMO_CONFIG
from tkr_embed.models.gpt_oss.random_init import build_random_model


def test_metadata_for_a_mixed_prefill_and_decode_batch():
    # seq 0: prefill of 5 tokens from scratch; seq 1: one decode token at position 9
    metadata = build_attention_metadata([(0, 5, [7, 2]), (9, 1, [4, 0, 3])], block_size=4, device="cpu")
    assert metadata.slot_mapping.tolist() == [28, 29, 30, 31, 8, 13]
    assert metadata.slot_mapping.dtype == torch.int64
    assert metadata.query_start_loc.tolist() == [0, 5, 6]
    assert metadata.query_start_loc.dtype == torch.int32
    assert metadata.seq_lens.tolist() == [5, 10]
    assert metadata.block_tables.tolist() == [[7, 2, 0], [4, 0, 3]]
    assert metadata.block_tables.dtype == torch.int32
    assert (metadata.max_query_len, metadata.max_seq_len, metadata.is_decode_only) == (5, 10, False)
    assert metadata.start_positions == [0, 9] and metadata.query_lens == [5, 1]


def test_a_mixed_step_whose_decodes_come_first_is_split_for_the_kernels():
    """The scheduler lists a step's decodes first: the CUDA path sends those rows to the decode kernel and the chunks,
    with query starts from 0 and tensors of their own, to the prefill kernel."""
    metadata = build_attention_metadata(
        [(9, 1, [4, 0, 3]), (3, 1, [1]), (0, 5, [7, 2]), (4, 2, [5, 6])], block_size=4, device="cpu"
    )
    assert metadata.num_leading_decodes == 2 and metadata.prefill_max_query_len == 5
    assert metadata.prefill_query_start_loc.tolist() == [0, 5, 7]
    assert metadata.prefill_seq_lens.tolist() == [5, 6]
    assert metadata.prefill_block_tables.tolist() == [[7, 2, 0], [5, 6, 0]]
    assert metadata.query_start_loc.tolist() == [0, 1, 2, 7, 9]
    # a decode after a chunk, or no chunk at all: nothing to split
    assert build_attention_metadata([(0, 5, [7, 2]), (9, 1, [4, 0, 3])], 4, "cpu").num_leading_decodes == 0
    assert build_attention_metadata([(3, 1, [1]), (6, 1, [0, 2])], 4, "cpu").num_leading_decodes == 0


def test_decode_only_batch_is_flagged():
    metadata = build_attention_metadata([(3, 1, [1]), (6, 1, [0, 2])], block_size=4, device="cpu")
    assert metadata.is_decode_only and metadata.slot_mapping.tolist() == [7, 10]


def test_block_table_too_short_is_rejected():
    with pytest.raises(AttentionInputError, match="cannot hold 9 positions"):
        build_attention_metadata([(4, 5, [0, 1])], block_size=4, device="cpu")


def test_kv_cache_layout_and_write():
    config = dataclasses.replace(DEMO_CONFIG)
    caches = allocate_kv_cache(config, num_blocks=3, block_size=4, dtype=torch.bfloat16, device="cpu")
    assert len(caches) == 4 and caches[0].shape == (2, 3, 4, 2, 16) and caches[0].dtype == torch.bfloat16
    key = torch.arange(2 * 2 * 16, dtype=torch.float32).view(2, 2, 16)  # [T, Hkv, D]
    write_kv_cache(caches[0], key, -key, torch.tensor([5, 11]))
    assert torch.equal(caches[0][0, 1, 1], key[0].bfloat16())  # slot 5 = block 1, offset 1
    assert torch.equal(caches[0][1, 2, 3], -key[1].bfloat16())  # slot 11 = block 2, offset 3
    assert caches[0].abs().sum().item() == 2 * key.abs().sum().item()


def test_named_real_shapes():
    assert GptOssConfig.gpt_oss_20b().num_hidden_layers == 24
    assert GptOssConfig.gpt_oss_20b().num_local_experts == 32
    assert GptOssConfig.gpt_oss_120b().num_hidden_layers == 36
    assert GptOssConfig.gpt_oss_120b().num_local_experts == 128


@pytest.mark.parametrize("expert_format", ["mxfp4", "dense"])
def test_random_model_is_seeded_and_runs(expert_format):
    config = dataclasses.replace(DEMO_CONFIG, vocab_size=512, num_hidden_layers=2, layer_types=[])
    first = build_random_model(config, device="cpu", dtype=torch.float32, expert_format=expert_format, seed=3)
    again = build_random_model(config, device="cpu", dtype=torch.float32, expert_format=expert_format, seed=3)
    other = build_random_model(config, device="cpu", dtype=torch.float32, expert_format=expert_format, seed=4)
    names = [n for n, _ in first.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=False)), names
    assert not torch.equal(first.lm_head.weight, other.lm_head.weight)
    caches = allocate_kv_cache(config, 4, 8, dtype=torch.float32, device="cpu")
    metadata = build_attention_metadata([(0, 6, [2])], 8, "cpu")
    logits = first.compute_logits(first(torch.arange(6), torch.arange(6), caches, metadata))
    assert logits.shape == (6, 512) and torch.isfinite(logits).all()
    assert logits.std().item() > 0.5  # not degenerate


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("shape", ["demo", "20b"])
def test_yarn_frequencies_equal_the_reference(shape, truncate):
    from transformers import GptOssConfig as ReferenceConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from tkr_embed.models.gpt_oss.layers import yarn_inv_freq

    base = DEMO_CONFIG if shape == "demo" else GptOssConfig.gpt_oss_20b()
    config = dataclasses.replace(base, rope_scaling={**base.rope_scaling, "truncate": truncate})
    reference_config = ReferenceConfig(
        **{k: v for k, v in config.to_hf_dict().items() if k not in ("quantization_config", "architectures")}
    )
    expected_freq, expected_scale = ROPE_INIT_FUNCTIONS["yarn"](reference_config, "cpu")
    inv_freq, scale = yarn_inv_freq(config)
    assert torch.equal(inv_freq, expected_freq)
    assert scale == pytest.approx(expected_scale, rel=0, abs=1e-12)
    assert scale > 1.0  # YaRN's attention factor is in use

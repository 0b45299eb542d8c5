"""Helpers for the gpt-oss model tests: prompts and a paged runner that drives the model like the engine."""

from __future__ import annotations

import random

import torch

from tkr_embed.backends.torch.attention import allocate_kv_cache, build_attention_metadata
from tkr_embed.models.gpt_oss.model import GptOssForCausalLM

BLOCK_SIZE = 4  # small, so every sequence spans many non-contiguous blocks
NUM_BLOCKS = 256


def random_prompt(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(0, 200000) for _ in range(length)]


class PagedRunner:
    """Drives our model like the engine does: per-sequence block tables over a shared paged cache."""

    def __init__(self, model: GptOssForCausalLM, *, seed: int = 0) -> None:
        self.model = model
        self.kv_caches = allocate_kv_cache(model.config, NUM_BLOCKS, BLOCK_SIZE, dtype=model.dtype, device="cpu")
        self.free_blocks = list(range(NUM_BLOCKS))
        random.Random(seed).shuffle(self.free_blocks)  # non-contiguous, out-of-order blocks
        self.block_tables: dict[int, list[int]] = {}
        self.num_cached: dict[int, int] = {}

    def step(self, chunks: list[tuple[int, list[int]]]) -> list[torch.Tensor]:
        """chunks = [(seq_id, new token ids)]; returns each chunk's logits [len, vocab] float32."""
        seqs, input_ids, positions = [], [], []
        for seq_id, tokens in chunks:
            start = self.num_cached.get(seq_id, 0)
            table = self.block_tables.setdefault(seq_id, [])
            while len(table) * BLOCK_SIZE < start + len(tokens):
                table.append(self.free_blocks.pop())
            seqs.append((start, len(tokens), list(table)))
            input_ids.extend(tokens)
            positions.extend(range(start, start + len(tokens)))
            self.num_cached[seq_id] = start + len(tokens)
        metadata = build_attention_metadata(seqs, BLOCK_SIZE, "cpu")
        hidden = self.model(torch.tensor(input_ids), torch.tensor(positions), self.kv_caches, metadata)
        logits = self.model.compute_logits(hidden)
        return list(logits.split([len(t) for _, t in chunks]))

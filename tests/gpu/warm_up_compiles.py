"""Run by test_gpu_runner.py in a fresh process: which Triton kernels are compiled while a CUDA runner of the
20b shape (two layers, random weights) warms up, and which are compiled afterwards by steps of every size up to
the largest. Prints one JSON object."""

from __future__ import annotations

import json
import sys

import torch
import triton

from tkr_embed.backends.torch.runner import TorchModelRunner
from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.random_init import build_random_model

MAX_STEP = 8192
BLOCK = 16


def main() -> int:
    compiled: list[str] = []

    def record(*, repr, fn, **_):  # called on every in-process cache miss, before compiling
        compiled.append(fn.name)
        signatures.append(repr)
        return None

    signatures: list[str] = []

    model = build_random_model(GptOssConfig(num_hidden_layers=2), device="cuda")
    runner = TorchModelRunner.from_model(model, num_kv_blocks=2048, max_num_batched_tokens=MAX_STEP)
    triton.knobs.runtime.jit_cache_hook = record
    forwards = runner.warm_up(MAX_STEP)
    during = sorted(set(compiled))
    compiled.clear()
    signatures.clear()
    next_block = [0]

    def seq(tokens: int, start: int = 0) -> BatchEntry:
        count = -(-(start + tokens) // BLOCK)
        table = list(range(next_block[0], next_block[0] + count))
        next_block[0] = (next_block[0] + count) % 1024
        return BatchEntry(len(table), [1] * tokens, start, table, sample=False)

    steps = [[seq(n)] for n in (1, 5, 16, 17, 24, 33, 64, 100, 128, 129, 700, 2047, 2049, 4095, 4096, 5000, MAX_STEP)]
    steps.append([seq(300), seq(211, start=40), seq(1, start=500), seq(1, start=17)])  # chunks and decodes
    steps.append([seq(1, start=40 + i) for i in range(80)])  # decode, beyond graphs
    for entries in steps:
        runner.logits(ScheduledBatch(entries), use_graphs=False)
    for size in (3, 64):  # graphed decode
        entries = [BatchEntry(i, [1], 30, [2 * i, 2 * i + 1], sample=True) for i in range(size)]
        runner.logits(ScheduledBatch(entries))
    torch.cuda.synchronize()
    print(
        json.dumps(
            {
                "forwards": forwards,
                "during_warm_up": during,
                "after": sorted(set(compiled)),
                "after_signatures": [s[:600] for s in signatures],
                "mma": model.moe_mma_exact,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An eager step (prompt chunks, with or without decodes beside them) is queued on CUDA without the host waiting
for the device: its inputs, attention metadata and sampled rows reach the device through asynchronous copies, so
the host can prepare the next step while this one computes. Its tokens equal those of the same step run plainly."""

from __future__ import annotations

import random

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BLOCK = 16


def _batches(first_block: int) -> list:
    """A prefill of two prompts, then a step with one decode ahead of a prompt chunk (a mixed step)."""
    from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
    from tkr_embed.engine.sampling_params import SamplingParams

    rng = random.Random(3)
    greedy = SamplingParams(temperature=0.0)
    tables = [list(range(first_block + 8 * i, first_block + 8 * (i + 1))) for i in range(3)]
    prompts = [[rng.randrange(200_000) for _ in range(n)] for n in (40, 25, 60)]
    return [
        ScheduledBatch(
            [
                BatchEntry(0, prompts[0], 0, tables[0], True, greedy),
                BatchEntry(1, prompts[1], 0, tables[1], True, greedy),
            ]
        ),
        ScheduledBatch(
            [BatchEntry(0, [7], 40, tables[0], True, greedy), BatchEntry(2, prompts[2], 0, tables[2], True, greedy)]
        ),
    ]


def test_an_eager_step_is_queued_without_waiting_for_the_device(demo_model_dir):
    from tkr_embed.backends.torch.runner import TorchModelRunner

    runner = TorchModelRunner(demo_model_dir, device="cuda", num_kv_blocks=128, cuda_graph_batch_sizes=(1, 2))
    plain = [runner.execute(batch) for batch in _batches(0)]  # also warms kernels and page-locked blocks
    torch.cuda.synchronize()
    launched = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in _batches(32):  # other KV blocks, the same contexts
            launched.append(runner.launch(batch))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [[t.token_id for t in step()] for step in launched] == [[t.token_id for t in step] for step in plain]

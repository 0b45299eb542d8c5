"""The sort-free draw on the GPU: the same ids kept as on the CPU (there, checked against the definitions), draws
that follow the truncated softmax, and seeded rows that ignore the batch."""

from __future__ import annotations

import math

import pytest
import torch

from tkr_embed.backends.torch.sampler import Sampler, truncated
from tkr_embed.engine.runner import BatchEntry
from tkr_embed.engine.sampling_params import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CASES = [
    SamplingParams(temperature=1.0, top_k=50),
    SamplingParams(temperature=1.0, top_p=0.9),
    SamplingParams(temperature=1.0, min_p=0.1),
    SamplingParams(temperature=1.0, top_k=400, top_p=0.7, min_p=0.02),
]


@pytest.mark.parametrize("spread", [0.5, 6.0])
def test_the_gpu_keeps_the_ids_the_cpu_keeps(spread: float) -> None:
    logits = (torch.randn(len(CASES) + 1, 201_088, generator=torch.Generator().manual_seed(3)) * spread).round()
    params = [*CASES, SamplingParams(temperature=1.0)]
    on_cpu = truncated(logits, params)
    on_gpu = truncated(logits.cuda(), params).cpu()
    assert torch.equal(torch.isfinite(on_gpu), torch.isfinite(on_cpu))


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.8), SamplingParams(temperature=1.0, top_p=0.75)])
def test_gpu_draws_follow_the_truncated_softmax(params: SamplingParams) -> None:
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -0.5, -1.0, -3.0])
    draws = 40_000
    entries = [BatchEntry(i, [1], 0, [0], True, params) for i in range(draws)]
    tokens = [t.token_id for t in Sampler()(logits.cuda().expand(draws, -1).contiguous(), entries)]
    kept = torch.isfinite(truncated((logits / params.temperature)[None], [params])[0])
    probs = torch.softmax((logits / params.temperature).masked_fill(~kept, float("-inf")), -1)
    counts = torch.bincount(torch.tensor(tokens), minlength=len(logits))
    for token_id, p in enumerate(probs.tolist()):
        sigma = math.sqrt(draws * p * (1 - p))
        assert abs(int(counts[token_id]) - draws * p) <= 5 * sigma + 1, (token_id, int(counts[token_id]), draws * p)


def test_a_seeded_gpu_row_ignores_the_batch() -> None:
    logits = torch.randn(6, 201_088, generator=torch.Generator().manual_seed(4)).cuda()
    seeded = SamplingParams(temperature=1.0, seed=42, top_p=0.95)
    sampler = Sampler()
    alone = sampler(logits[2:3], [BatchEntry(2, [1], 0, [0], True, seeded, (), (1, 2))])[0].token_id
    mixed = [BatchEntry(i, [1], 0, [0], True, SamplingParams(temperature=1.0)) for i in range(6)]
    mixed[2] = BatchEntry(2, [1], 0, [0], True, seeded, (), (1, 2))
    assert sampler(logits, mixed)[2].token_id == alone


def test_sampling_is_queued_without_waiting_for_the_device() -> None:
    """No kind of request makes the sampler wait for the device (torch's sync debug mode raises on a wait): a wait
    would last until the step's forward ends, and the next step could not be queued while this one runs."""
    logits = torch.randn(6, 201_088, device="cuda")
    history = (tuple(range(100, 1100)), tuple(range(50, 300)))
    kinds = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.7, top_p=0.9),
        SamplingParams(temperature=1.3, top_k=40, min_p=0.05, seed=5),
        SamplingParams(temperature=1.0, presence_penalty=0.4, frequency_penalty=0.2, repetition_penalty=1.1),
        SamplingParams(temperature=0.0, logit_bias=((7, 5.0), (9, -100.0))),
    ]
    batches = [[BatchEntry(i, [1], 0, [0], True, p, *history) for i in range(6)] for p in kinds]
    batches.append([BatchEntry(i, [1], 0, [0], True, p, *history) for i, p in enumerate(kinds)])  # all at once
    sampler = Sampler()
    for entries in batches:  # once first: the page-locked blocks are allocated and cached
        sampler.sample(logits, entries)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for entries in batches:
            sampler.sample(logits, entries)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_penalties_from_histories_on_the_device_equal_the_host_histories_and_never_wait() -> None:
    """The runner's sampler keeps penalised rows' histories on the device: steps whose entries carry no history
    (launched ahead) pick what a sampler reading the whole history from the host picks, without a device wait."""
    generator = torch.Generator().manual_seed(9)
    vocab = 201_088
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=1.3),
        SamplingParams(temperature=0.0, presence_penalty=0.8, frequency_penalty=0.5),
        SamplingParams(temperature=0.0),
    ]
    histories = [([int(i) for i in torch.randint(0, 300, (200,), generator=generator)], []) for _ in params]
    kept, host = Sampler(keep_histories=True), Sampler()

    def entries(ahead: bool) -> list[BatchEntry]:
        return [
            BatchEntry(
                i, [1], 0, [0], True, p, *((), ()) if ahead else (tuple(h[0]), tuple(h[1])), history_on_host=not ahead
            )
            for i, (p, h) in enumerate(zip(params, histories, strict=True))
        ]

    for step in range(6):
        # each step's logits favour the ids seen so far, so the penalties decide the picks
        logits = torch.randn(len(params), vocab, generator=generator).cuda()
        logits[:, :300] += 4.0
        expected = [t.token_id for t in host(logits, entries(False))]
        if step:
            torch.cuda.set_sync_debug_mode("error")
        try:
            sampled = kept.sample(logits, entries(ahead=step > 0))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert [t.token_id for t in kept.results(entries(False), sampled)] == expected
        for (_, output), token in zip(histories, expected, strict=True):
            output.append(token)

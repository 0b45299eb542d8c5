"""The sampler's arithmetic: top_k/top_p/min_p keep the ids a brute-force reading of their definitions keeps, the
Gumbel draw follows the truncated softmax, the CPU's shortcuts (numpy argmax and unpacking, masks applied at the
argmax) equal torch's, and the sparse penalties equal the dense formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tkr_embed.backends.torch.penalties import PenaltyHistories, apply_penalties
from tkr_embed.backends.torch.sampler import NUCLEUS_CANDIDATES, Sampler, argmax_rows, truncated, unpack_bitmask
from tkr_embed.engine.runner import BatchEntry
from tkr_embed.engine.sampling_params import SamplingParams


def kept_by_definition(row: list[float], params: SamplingParams) -> set[int]:
    """The ids a row keeps, read straight off the definitions: values in order, ties kept together."""
    order = sorted(range(len(row)), key=lambda i: -row[i])
    kept = set(range(len(row)))
    if 0 < params.top_k < len(row):
        kth = row[order[params.top_k - 1]]
        kept = {i for i in kept if row[i] >= kth}
    finite = [row[i] if i in kept else -math.inf for i in range(len(row))]
    best = max(finite)
    weights = [math.exp(v - best) for v in finite]
    total = sum(weights)
    probs = [w / total for w in weights]
    after_k = set(kept)
    if params.top_p < 1.0:
        mass, floor = 0.0, None
        for i in sorted(after_k, key=lambda i: -row[i]):
            if mass >= params.top_p:
                break
            mass += probs[i]
            floor = row[i]
        kept &= {i for i in after_k if row[i] >= floor}
    if params.min_p > 0.0:
        best_prob = max(probs)
        kept &= {i for i in after_k if probs[i] >= params.min_p * best_prob}
    return kept


def rows_with_ties(rows: int, vocab: int, spread: float, seed: int) -> torch.Tensor:
    """Logits rounded to a coarse grid, so many values tie; `spread` makes them peaked or flat."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, vocab, generator=generator) * spread).round()  # [S, V]


CASES = [
    SamplingParams(temperature=1.0, top_k=5),
    SamplingParams(temperature=1.0, top_p=0.5),
    SamplingParams(temperature=1.0, top_p=0.97),
    SamplingParams(temperature=1.0, min_p=0.2),
    SamplingParams(temperature=1.0, top_k=40, top_p=0.8, min_p=0.05),
    SamplingParams(temperature=1.0, top_k=10_000_000),  # wider than the vocabulary: no cut
]


@pytest.mark.parametrize("spread", [0.5, 6.0])  # flat: a nucleus wider than the candidates; peaked: narrower
@pytest.mark.parametrize("params", CASES, ids=lambda p: f"k{p.top_k}-p{p.top_p}-m{p.min_p}")
def test_truncation_keeps_the_ids_of_the_definitions(params: SamplingParams, spread: float) -> None:
    vocab = 3 * NUCLEUS_CANDIDATES[0]
    logits = rows_with_ties(4, vocab, spread, seed=int(spread * 10) + params.top_k)
    plain = SamplingParams(temperature=1.0)
    mixed = [params, plain, params, params]  # a row without truncation in the batch stays whole
    out = truncated(logits, mixed)
    for row, row_params in enumerate(mixed):
        kept = set(torch.isfinite(out[row]).nonzero().flatten().tolist())
        assert kept == kept_by_definition(logits[row].tolist(), row_params), row
        assert torch.equal(out[row][torch.isfinite(out[row])], logits[row][torch.isfinite(out[row])])
    assert torch.equal(logits, rows_with_ties(4, vocab, spread, seed=int(spread * 10) + params.top_k))  # untouched


def test_each_row_finds_its_nucleus_among_as_few_values_as_it_needs() -> None:
    """Rows whose nuclei fit the first candidates, the second, or neither, in one batch: each keeps the ids of the
    definition."""
    vocab = 2 * NUCLEUS_CANDIDATES[-1] + 7
    logits = torch.zeros(4, vocab)
    logits[0, :10] = 12.0  # a few ids hold nearly all the mass
    logits[1, : 3 * NUCLEUS_CANDIDATES[0]] = 9.0  # a nucleus wider than the first candidates
    logits[2] = torch.linspace(3.0, -3.0, vocab)  # wider than every candidate list: sorted whole
    logits[3, 5:9] = 11.0
    params = [SamplingParams(temperature=1.0, top_p=0.8)] * 4
    out = truncated(logits, params)
    for row in range(4):
        kept = set(torch.isfinite(out[row]).nonzero().flatten().tolist())
        assert kept == kept_by_definition(logits[row].tolist(), params[row]), row
    assert [int(torch.isfinite(out[row]).sum()) for row in (0, 1, 3)] == [10, 3 * NUCLEUS_CANDIDATES[0], 4]


def test_a_greedy_row_is_left_whole() -> None:
    logits = rows_with_ties(2, 100, 3.0, seed=1)
    greedy = SamplingParams(temperature=0.0, top_k=3, top_p=0.5, min_p=0.5)  # its pick is the argmax: nothing to cut
    out = truncated(logits, [greedy, SamplingParams(temperature=1.0, top_k=3)])
    assert torch.equal(out[0], logits[0])
    assert int(torch.isfinite(out[1]).sum()) < 100


def test_a_nucleus_wider_than_the_candidates_is_found_by_sorting() -> None:
    flat = torch.zeros(1, 4 * NUCLEUS_CANDIDATES[0])
    flat[0, :7] = 3.0  # seven best ids hold too little mass: the nucleus reaches into the flat tail
    out = truncated(flat, [SamplingParams(temperature=1.0, top_p=0.9)])
    assert int(torch.isfinite(out).sum()) == 4 * NUCLEUS_CANDIDATES[0]  # the tail is one tie, kept whole


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.5),
        SamplingParams(temperature=1.7, top_k=4),
        SamplingParams(temperature=1.0, top_p=0.75),
        SamplingParams(temperature=2.0, min_p=0.3),
    ],
    ids=lambda p: f"t{p.temperature}-k{p.top_k}-p{p.top_p}-m{p.min_p}",
)
def test_draws_follow_the_truncated_softmax(params: SamplingParams) -> None:
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -0.5, -1.0, -3.0])
    draws = 40_000
    entries = [BatchEntry(i, [1], 0, [0], True, params) for i in range(draws)]
    tokens = [t.token_id for t in Sampler()(logits.expand(draws, -1).contiguous(), entries)]
    kept = kept_by_definition((logits / params.temperature).tolist(), params)
    weights = {i: math.exp(float(logits[i]) / params.temperature) for i in kept}
    counts = np.bincount(tokens, minlength=len(logits))
    for token_id in range(len(logits)):
        if token_id not in kept:
            assert counts[token_id] == 0, token_id
            continue
        p = weights[token_id] / sum(weights.values())
        sigma = math.sqrt(draws * p * (1 - p))
        assert abs(counts[token_id] - draws * p) <= 5 * sigma + 1, (token_id, counts[token_id], draws * p)


def test_the_numpy_argmax_takes_the_first_best_id_as_torch_does() -> None:
    values = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, float("nan"), 5.0, float("nan")]])
    assert argmax_rows(values).tolist() == values.argmax(dim=-1).tolist() == [1, 0, 1]
    assert argmax_rows(values.bfloat16()).tolist() == [1, 0, 1]  # numpy has no bfloat16: torch takes it


@pytest.mark.parametrize("vocab", [32, 50, 201_088])
def test_unpacked_bits_are_the_ids_bits(vocab: int) -> None:
    words = torch.randint(-(2**31), 2**31 - 1, (3, -(-vocab // 32)), dtype=torch.int32)
    mask = unpack_bitmask(words, vocab)
    assert mask.shape == (3, vocab) and mask.dtype == torch.bool
    ids = torch.arange(vocab)
    expected = ((words.long()[:, ids // 32] >> (ids % 32)) & 1).bool()  # bit i % 32 of word i // 32
    assert torch.equal(mask, expected)


def test_masks_applied_at_the_argmax_pick_what_masked_logits_pick(monkeypatch) -> None:
    """On the CPU the masks wait for the argmax (only rows whose best id they refuse are masked): every greedy and
    seeded pick equals the one from logits masked first, whether the row's best id is allowed or not."""
    from tkr_embed.backends.torch import sampler as sampler_module
    from tkr_embed.engine.constraints import PendingMask

    vocab, rows = 3000, 24
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(7)) * 3  # [S, V]
    entries = []
    for row in range(rows):
        best = int(logits[row].argmax())
        allowed = set(range(row % 5, vocab, 7))
        if row % 2:  # half the rows allow their best id, half refuse it
            allowed.add(best)
        else:
            allowed.discard(best)
        params = SamplingParams(temperature=0.0) if row % 3 == 0 else SamplingParams(temperature=1.3, seed=row)
        entries.append(BatchEntry(row, [1], 0, [0], True, params, allowed_tokens=PendingMask.of_ids(tuple(allowed))))
    deferred = [t.token_id for t in Sampler()(logits, entries)]
    monkeypatch.setattr(sampler_module, "_argmax_can_mask", lambda *_: False)
    masked_first = [t.token_id for t in Sampler()(logits, entries)]
    assert deferred == masked_first
    for row, token_id in enumerate(deferred):
        assert (token_id - row % 5) % 7 == 0 or (row % 2 and token_id == int(logits[row].argmax()))
    assert all(deferred[row] != int(logits[row].argmax()) for row in range(0, rows, 6))  # greedy, best refused


def test_penalties_change_only_seen_ids_exactly_as_the_dense_formulas() -> None:
    """Repetition (prompt and output), then frequency and presence (output): the sparse update equals the formulas
    over the whole vocabulary bit for bit, and leaves the caller's logits as they were."""
    vocab = 500
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(5, vocab, generator=generator) * 4
    before = logits.clone()
    rng = np.random.default_rng(3)
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=1.3),
        SamplingParams(temperature=0.0, frequency_penalty=0.7, presence_penalty=-0.4),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, repetition_penalty=0.8, frequency_penalty=-1.1, presence_penalty=1.5),
        SamplingParams(temperature=0.0, presence_penalty=2.0),
    ]
    histories = [(tuple(rng.integers(0, 60, 40)), tuple(rng.integers(30, 90, 25))) for _ in params]  # repeats, overlap
    histories[4] = (tuple(rng.integers(0, vocab, 10)), ())  # a presence penalty with nothing generated yet
    entries = [BatchEntry(i, [1], 0, [0], True, p, *histories[i]) for i, p in enumerate(params)]
    out = apply_penalties(logits, entries, PenaltyHistories(persistent=False).rows(entries, logits.device))
    assert torch.equal(logits, before)
    expected = logits.clone()
    for row, (p, (prompt, output)) in enumerate(zip(params, histories, strict=True)):
        seen = torch.zeros(vocab, dtype=torch.bool)
        seen[list(prompt + output)] = True
        penalty = torch.tensor(p.repetition_penalty)
        penalised = torch.where(expected[row] > 0, expected[row] / penalty, expected[row] * penalty)
        expected[row] = torch.where(seen, penalised, expected[row])
        counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=vocab).float()
        frequency, presence = torch.tensor(p.frequency_penalty), torch.tensor(p.presence_penalty)
        expected[row] = expected[row] - frequency * counts - presence * (counts > 0).float()
    assert torch.equal(out, expected)
    assert torch.equal(out[2], logits[2]) and torch.equal(out[4], logits[4])  # nothing to penalise

"""Sampler: every option has a visible effect; seeds ignore the batch; logprobs are raw log-softmax."""

from __future__ import annotations

import torch

from tkr_embed.backends.torch.sampler import Sampler
from tkr_embed.engine.constraints import PendingMask
from tkr_embed.engine.runner import BatchEntry
from tkr_embed.engine.sampling_params import SamplingParams

torch.set_num_threads(2)
VOCAB = 50


def entry(params: SamplingParams, seq_id: int = 0, prompt=(), output=()) -> BatchEntry:
    return BatchEntry(seq_id, [1], 0, [0], True, params, tuple(prompt), tuple(output))


def logits_rows(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 2.0  # [S, V]


def sample_many(logits: torch.Tensor, params: SamplingParams, draws: int = 300, **entry_kw) -> list[int]:
    sampler = Sampler()
    batch = logits.expand(draws, VOCAB).contiguous()
    return [t.token_id for t in sampler(batch, [entry(params, i, **entry_kw) for i in range(draws)])]


def test_greedy_is_argmax_per_row() -> None:
    logits = logits_rows(4)
    tokens = Sampler()(logits, [entry(SamplingParams(temperature=0.0), i) for i in range(4)])
    assert [t.token_id for t in tokens] == logits.argmax(-1).tolist()


def test_temperature_spreads_and_top_k_top_p_min_p_narrow() -> None:
    logits = logits_rows(1, seed=1)
    best = int(logits.argmax())
    assert len(set(sample_many(logits, SamplingParams(temperature=1.0)))) > 5
    assert set(sample_many(logits, SamplingParams(temperature=1.0, top_k=1))) == {best}
    top3 = set(logits[0].topk(3).indices.tolist())
    assert set(sample_many(logits, SamplingParams(temperature=1.0, top_k=3))) <= top3
    assert set(sample_many(logits, SamplingParams(temperature=1.0, top_p=1e-6))) == {best}
    assert set(sample_many(logits, SamplingParams(temperature=1.0, min_p=1.0))) == {best}
    probs = torch.softmax(logits[0], -1)
    allowed = set((probs >= 0.2 * probs.max()).nonzero().flatten().tolist())
    assert set(sample_many(logits, SamplingParams(temperature=1.0, min_p=0.2))) <= allowed


def test_low_temperature_concentrates_on_the_best_token() -> None:
    logits = logits_rows(1, seed=2)
    cold = sample_many(logits, SamplingParams(temperature=0.05))
    hot = sample_many(logits, SamplingParams(temperature=5.0))
    best = int(logits.argmax())
    assert cold.count(best) > hot.count(best)


def test_penalties_push_seen_tokens_down() -> None:
    logits = torch.zeros(1, VOCAB)
    logits[0, 7], logits[0, 8] = 3.0, 2.5
    sampler = Sampler()
    greedy = SamplingParams(temperature=0.0)
    assert sampler(logits, [entry(greedy)])[0].token_id == 7
    repetition = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sampler(logits, [entry(repetition, prompt=[7])])[0].token_id == 8  # prompt counts too
    presence = SamplingParams(temperature=0.0, presence_penalty=1.0)
    assert sampler(logits, [entry(presence, prompt=[7])])[0].token_id == 7  # output only
    assert sampler(logits, [entry(presence, output=[7])])[0].token_id == 8
    frequency = SamplingParams(temperature=0.0, frequency_penalty=0.3)
    assert sampler(logits, [entry(frequency, output=[7])])[0].token_id == 7  # 3.0 - 0.3 > 2.5
    assert sampler(logits, [entry(frequency, output=[7, 7])])[0].token_id == 8  # 3.0 - 0.6 < 2.5


def test_seeded_token_depends_on_seed_and_step_not_on_the_batch() -> None:
    logits = logits_rows(6, seed=3)
    params = SamplingParams(temperature=1.0, seed=42)
    sampler = Sampler()
    alone = sampler(logits[2:3], [entry(params, output=[1, 2])])[0].token_id
    mixed = [entry(SamplingParams(temperature=1.0), i) for i in range(6)]
    mixed[2] = entry(params, 2, output=[1, 2])
    assert sampler(logits, mixed)[2].token_id == alone
    flat = torch.zeros(1, VOCAB)
    by_step = {sampler(flat, [entry(params, output=[0] * step)])[0].token_id for step in range(20)}
    by_seed = {sampler(flat, [entry(SamplingParams(temperature=1.0, seed=s))])[0].token_id for s in range(20)}
    assert len(by_step) > 5 and len(by_seed) > 5


def test_logprobs_match_log_softmax_of_raw_logits() -> None:
    logits = logits_rows(2, seed=4)
    params = SamplingParams(temperature=0.0, logprobs=3, repetition_penalty=3.0)
    tokens = Sampler()(logits, [entry(params, 0, prompt=[int(logits[0].argmax())]), entry(params, 1)])
    reference = torch.log_softmax(logits, -1)
    for row, token in enumerate(tokens):
        assert abs(token.logprob - float(reference[row, token.token_id])) < 1e-5
        expected = reference[row].topk(3)
        assert [t for t, _ in token.top_logprobs] == expected.indices.tolist()
        assert all(abs(lp - float(v)) < 1e-5 for (_, lp), v in zip(token.top_logprobs, expected.values, strict=False))
    assert tokens[0].token_id != int(logits[0].argmax())  # penalty changed the pick, not the logprobs
    no_logprobs = Sampler()(logits, [entry(SamplingParams(temperature=0.0))] * 2)
    assert no_logprobs[0].logprob is None and no_logprobs[0].top_logprobs is None
    zero = Sampler()(logits[:1], [entry(SamplingParams(temperature=0.0, logprobs=0))])[0]
    assert zero.top_logprobs == [] and zero.logprob is not None


def test_allowed_token_ids_confine_every_kind_of_sampling() -> None:
    logits = logits_rows(3, seed=5)
    allowed = (3, 17, 29)
    sampler = Sampler()
    for params in (
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=1.0, seed=8),
        SamplingParams(temperature=2.0, top_k=2, top_p=0.5, min_p=0.1, repetition_penalty=1.5, presence_penalty=1.0),
    ):
        rows = [
            BatchEntry(i, [1], 0, [0], True, params, (3,), (17,), allowed_tokens=PendingMask.of_ids(allowed))
            for i in range(3)
        ]
        draws = {t.token_id for _ in range(40) for t in sampler(logits, rows)}
        assert draws <= set(allowed)
    # Greedy takes the best allowed id; an unconstrained row beside it keeps its own argmax.
    greedy = SamplingParams(temperature=0.0)
    picks = sampler(
        logits[:2],
        [entry(greedy, 0), BatchEntry(1, [1], 0, [0], True, greedy, allowed_tokens=PendingMask.of_ids(allowed))],
    )
    assert picks[0].token_id == int(logits[0].argmax())
    assert picks[1].token_id == max(allowed, key=lambda i: float(logits[1, i]))
    # Sampling draws from the distribution renormalised over the allowed ids: uniform over them for flat logits.
    rows = [
        BatchEntry(i, [1], 0, [0], True, SamplingParams(temperature=1.0), allowed_tokens=PendingMask.of_ids(allowed))
        for i in range(600)
    ]
    flat = [t.token_id for t in sampler(torch.zeros(600, VOCAB), rows)]
    assert set(flat) == set(allowed) and all(flat.count(i) > 150 for i in allowed)


def test_a_constrained_seeded_row_is_reproducible_and_ignores_the_batch() -> None:
    logits = logits_rows(4, seed=6)
    params = SamplingParams(temperature=1.0, seed=42, logprobs=2)
    allowed = tuple(range(0, VOCAB, 3))
    constrained = BatchEntry(2, [1], 0, [0], True, params, (), (1, 2), allowed_tokens=PendingMask.of_ids(allowed))
    sampler = Sampler()
    alone = sampler(logits[2:3], [constrained])[0]
    mixed = [entry(SamplingParams(temperature=1.0), i) for i in range(4)]
    mixed[2] = constrained
    beside = sampler(logits, mixed)[2]
    assert alone.token_id == beside.token_id and alone.token_id in allowed
    # Logprobs stay those of the raw logits: the constraint changes the pick, not the model's scores.
    assert abs(alone.logprob - float(torch.log_softmax(logits[2], -1)[alone.token_id])) < 1e-5


class _WordsState:
    def __init__(self, words) -> None:
        self.words = words

    def free_tokens_ahead(self) -> int:
        return 0

    def allowed_tokens(self):
        return self.words


def test_a_packed_bitmask_confines_a_row_as_its_ids_would() -> None:
    import numpy as np

    logits = logits_rows(3, seed=9)
    allowed = (0, 31, 32, VOCAB - 1)  # word edges, bit 31 (an int32 word's sign bit), the last id
    words = np.zeros(-(-VOCAB // 32), dtype=np.int32)
    for token_id in allowed:
        words.view(np.uint32)[token_id >> 5] |= np.uint32(1 << (token_id & 31))
    greedy = SamplingParams(temperature=0.0)
    rows = [
        entry(greedy, 0),
        BatchEntry(1, [1], 0, [0], True, greedy, allowed_tokens=PendingMask(_WordsState(words))),
        BatchEntry(2, [1], 0, [0], True, greedy, allowed_tokens=PendingMask.of_ids(allowed)),
    ]
    picks = [t.token_id for t in Sampler()(logits, rows)]
    assert picks[0] == int(logits[0].argmax())
    assert picks[1] == max(allowed, key=lambda i: float(logits[1, i]))
    assert picks[2] == max(allowed, key=lambda i: float(logits[2, i]))
    flat_rows = [
        BatchEntry(
            i, [1], 0, [0], True, SamplingParams(temperature=1.0), allowed_tokens=PendingMask(_WordsState(words))
        )
        for i in range(400)
    ]
    draws = [t.token_id for t in Sampler()(torch.zeros(400, VOCAB), flat_rows)]
    assert set(draws) == set(allowed)


def test_logit_bias_shifts_the_choice_but_not_the_logprobs() -> None:
    logits = logits_rows(2, seed=12)
    best = int(logits[0].argmax())
    target = int(logits[0].argmin())
    greedy = SamplingParams(temperature=0.0, logprobs=0, logit_bias=((best, -100.0),))
    forced = SamplingParams(temperature=1.0, logprobs=0, logit_bias=((target, 100.0),))
    rows = [BatchEntry(0, [1], 0, [0], True, greedy), BatchEntry(1, [1], 0, [0], True, forced)]
    banned, pushed = Sampler()(torch.stack([logits[0], logits[0]]), rows)
    assert banned.token_id == int(logits[0].topk(2).indices[1])  # the best id is banned: the second best wins
    assert pushed.token_id == target  # +100 outweighs any logit of this model
    raw = torch.log_softmax(logits[0], -1)
    assert abs(pushed.logprob - float(raw[target])) < 1e-5  # the model's own score, not the biased one
    plain = Sampler()(logits[:1], [BatchEntry(0, [1], 0, [0], True, SamplingParams(temperature=0.0))])[0]
    assert plain.token_id == best  # without a bias, the best id as before

"""A request's TokenConstraint decides which ids each of its completions may sample, whatever the sampling and
however the engine runs it: lookahead, n > 1, preemption, the engine in its own process."""

from __future__ import annotations

from dataclasses import dataclass

from engine_fakes import EarlyMasksToyRunner, FollowingToyRunner, ToyBuild, ToyRunner, ToyTokenizer, run_all, toy_logits

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.constraints import FREE_FOREVER
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.recipient_constraint import OneOfTokenSequences

PROMPT = [1, 2, 3]
# Ids the toy model seldom prefers: an unconstrained step would rarely land in them by chance.
STEPS = ((40, 41), (50,), (44, 45, 46), (47, 48))


@dataclass(frozen=True)
class FirstTokens:
    """Token i (i < len(steps)) must be one of steps[i]; then anything."""

    steps: tuple[tuple[int, ...], ...] = STEPS

    def start(self) -> _FirstTokensState:
        return _FirstTokensState(self.steps)


class _FirstTokensState:
    def __init__(self, steps: tuple[tuple[int, ...], ...]) -> None:
        self.steps = steps
        self.generated: list[int] = []

    def free_tokens_ahead(self) -> int:
        position = len(self.generated)
        return FREE_FOREVER if position >= len(self.steps) else 0

    def allowed_tokens(self) -> tuple[int, ...]:
        return self.steps[len(self.generated)]

    def advance(self, token_id: int) -> None:
        self.generated.append(token_id)


def _completions(finals: dict, request_id: str = "a") -> list[list[int]]:
    return [list(c.token_ids) for c in finals[request_id].outputs]


def _assert_follows(tokens: list[int], steps=STEPS) -> None:
    assert len(tokens) > len(steps)
    assert all(token in allowed for token, allowed in zip(tokens, steps, strict=False)), tokens


def test_every_completion_samples_only_allowed_ids_then_anything():
    unconstrained = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    free = _completions(run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": (PROMPT, unconstrained)}))
    assert not all(token in allowed for token, allowed in zip(free[0], STEPS, strict=False))  # the constraint matters
    for params in (
        SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True, constraint=FirstTokens()),
        SamplingParams(max_tokens=10, temperature=1.0, seed=3, ignore_eos=True, constraint=FirstTokens(), n=3),
        SamplingParams(
            max_tokens=10, temperature=0.7, top_k=5, top_p=0.9, n=4, ignore_eos=True, constraint=FirstTokens()
        ),
    ):
        finals = run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": (PROMPT, params)})
        assert len(_completions(finals)) == params.n
        for tokens in _completions(finals):
            _assert_follows(tokens)


def test_greedy_picks_the_best_allowed_id_and_seeds_reproduce():
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, constraint=FirstTokens())
    tokens = _completions(run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": (PROMPT, greedy)}))[0]
    context = list(PROMPT)
    for token, allowed in zip(tokens, STEPS, strict=False):
        logits = toy_logits(context)
        assert token == max(allowed, key=lambda i: logits[i].item())
        context.append(token)
    seeded = SamplingParams(max_tokens=12, temperature=1.0, seed=9, ignore_eos=True, constraint=FirstTokens(), n=2)
    runs = [
        _completions(run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": (PROMPT, seeded)}))
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_lookahead_goes_on_through_restricted_tokens_with_masks_that_saw_the_token_before():
    free = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    baseline = FollowingToyRunner()
    run_all(LLMEngine(baseline, ToyTokenizer(), EngineConfig()), {"a": (PROMPT, free)})
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, constraint=FirstTokens())
    ordinary = _completions(run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": (PROMPT, params)}))
    runner = FollowingToyRunner()
    ahead = _completions(run_all(LLMEngine(runner, ToyTokenizer(), EngineConfig()), {"a": (PROMPT, params)}))
    assert ahead == ordinary
    _assert_follows(ahead[0])
    # Each step is planned before the token before it is known, as without a constraint; its mask (which depends
    # on how many tokens were taken) is resolved only once that token was, or the tokens would differ.
    assert runner.followed == baseline.followed > 0


def test_masks_resolved_as_soon_as_the_engine_says_the_token_before_was_taken_are_the_masks_of_the_ordinary_engine():
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, constraint=FirstTokens(), n=3)
    requests = {"a": (PROMPT, params), "b": ([7, *PROMPT], params)}
    ordinary = run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), requests)
    runner = EarlyMasksToyRunner()
    early = run_all(LLMEngine(runner, ToyTokenizer(), EngineConfig()), requests)
    # Resolved early: the lookahead steps of tokens 2 to len(STEPS), each planned while the token before it was
    # unknown and the constraint still restricted (token 0 comes from the prefill, token 1 follows nothing).
    assert runner.taken_early == len(STEPS) - 1
    for request_id in requests:
        assert _completions(early, request_id) == _completions(ordinary, request_id)
        for tokens in _completions(early, request_id):
            _assert_follows(tokens)


def test_a_preempted_completion_keeps_its_place_in_the_constraint():
    # Few blocks: four sequences cannot all grow, so some are preempted and recomputed mid-way.
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, constraint=FirstTokens())
    requests = {f"r{i}": ([1 + i, 2, 3, 4, 5, 6, 7], params) for i in range(4)}
    roomy = run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), requests)
    engine = LLMEngine(ToyRunner(num_kv_blocks=16), ToyTokenizer(), EngineConfig())
    tight = run_all(engine, requests)
    assert engine.scheduler.counters.preemptions > 0
    for request_id in requests:
        assert _completions(tight, request_id) == _completions(roomy, request_id)
        _assert_follows(_completions(tight, request_id)[0])


async def test_the_constraint_crosses_to_the_engine_process():
    # The server's own constraint class, pickled into the child with the request.
    sequences = ((40, 50, 44), (40, 50, 45, 47), (41, 52))
    params = SamplingParams(
        max_tokens=8, temperature=1.0, seed=1, n=4, ignore_eos=True, constraint=OneOfTokenSequences(sequences)
    )
    engine = ProcessEngine(ToyBuild())
    try:
        outputs = [output async for output in engine.generate("a", PROMPT, params)]
    finally:
        await engine.shutdown()
    for completion in outputs[-1].outputs:
        tokens = list(completion.token_ids)
        assert any(tuple(tokens[: len(sequence)]) == sequence for sequence in sequences), tokens
        assert len(tokens) == 8


@dataclass(frozen=True)
class FreeInTheMiddle:
    """Token 0 in (40, 41); tokens 1 .. free_run free (a reasoning-like stretch); then the last restricted tokens
    (as packed bitmasks, as a grammar gives them) must each be 47 or 48; then anything."""

    free_run: int = 12
    tail: int = 3

    def start(self) -> _FreeInTheMiddleState:
        return _FreeInTheMiddleState(self)


class _FreeInTheMiddleState:
    def __init__(self, spec: FreeInTheMiddle) -> None:
        self.spec = spec
        self.count = 0

    def free_tokens_ahead(self) -> int:
        first_tail = 1 + self.spec.free_run
        if self.count >= first_tail + self.spec.tail:
            return FREE_FOREVER
        if self.count == 0 or self.count >= first_tail:
            return 0
        return first_tail - self.count

    def allowed_tokens(self):
        import numpy as np

        if self.count == 0:
            return (40, 41)
        words = np.zeros(4, dtype=np.uint32)  # the toy vocabulary fits in 128 ids
        for token_id in (47, 48):
            words[token_id >> 5] |= np.uint32(1 << (token_id & 31))
        return words

    def advance(self, token_id: int) -> None:
        self.count += 1


def test_lookahead_runs_through_a_free_stretch_and_the_restricted_tokens_around_it():
    spec = FreeInTheMiddle()
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, constraint=spec)
    ordinary = _completions(run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), {"a": (PROMPT, params)}))
    runner = FollowingToyRunner()
    ahead = _completions(run_all(LLMEngine(runner, ToyTokenizer(), EngineConfig()), {"a": (PROMPT, params)}))
    assert ahead == ordinary
    tokens = ahead[0]
    tail = tokens[1 + spec.free_run : 1 + spec.free_run + spec.tail]
    assert tokens[0] in (40, 41) and all(token in (47, 48) for token in tail), tokens
    assert any(token not in (47, 48) for token in tokens[1 : 1 + spec.free_run])  # the stretch was free
    baseline = FollowingToyRunner()
    free = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    run_all(LLMEngine(baseline, ToyTokenizer(), EngineConfig()), {"a": (PROMPT, free)})
    assert runner.followed == baseline.followed > spec.free_run

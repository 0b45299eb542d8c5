"""A step's constraint states take their tokens together: the work a state defers goes to its advancer in one call
with the step's other such work, before anyone asks the states anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine_fakes import FollowingToyRunner, ToyRunner, ToyTokenizer, run_all

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.constraints import FREE_FOREVER, DeferredAdvance, advance_states
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.sampling_params import SamplingParams

PROMPT = [1, 2, 3]
STEPS = ((40, 41), (50,), (44, 45, 46), (47, 48))


class RecordingAdvancer:
    """Gives each (state, token) job's state its token, and keeps every call's jobs."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    def advance_all(self, jobs: Sequence[object]) -> None:
        self.calls.append(list(jobs))
        for state, token_id in jobs:
            state.owed -= 1
            state.taken.append(token_id)


class _DeferringState:
    """Restricted to STEPS, then free; its tokens are taken by `advancer` (None: by itself)."""

    def __init__(self, advancer: RecordingAdvancer | None) -> None:
        self.advancer = advancer
        self.taken: list[int] = []
        self.owed = 0  # tokens handed back and not yet taken

    def free_tokens_ahead(self) -> int:
        assert self.owed == 0, "asked before its deferred token was taken"
        return FREE_FOREVER if len(self.taken) >= len(STEPS) else 0

    def allowed_tokens(self) -> tuple[int, ...]:
        assert self.owed == 0, "asked before its deferred token was taken"
        return STEPS[len(self.taken)]

    def advance(self, token_id: int) -> DeferredAdvance | None:
        if self.advancer is None:
            self.taken.append(token_id)
            return None
        self.owed += 1
        return DeferredAdvance(self.advancer, (self, token_id))


def test_each_advancer_takes_all_its_jobs_in_one_call_in_order_and_other_states_take_theirs_alone():
    first, second = RecordingAdvancer(), RecordingAdvancer()
    states = [_DeferringState(first), _DeferringState(None), _DeferringState(second), _DeferringState(first)]
    advance_states([(state, 40 + index) for index, state in enumerate(states)])
    assert first.calls == [[(states[0], 40), (states[3], 43)]]
    assert second.calls == [[(states[2], 42)]]
    assert [state.taken for state in states] == [[40], [41], [42], [43]]
    assert all(state.owed == 0 for state in states)  # done before advance_states returned
    advance_states([])
    assert len(first.calls) == len(second.calls) == 1  # nothing to take: no call


ADVANCER = RecordingAdvancer()


@dataclass(frozen=True)
class DeferredFirstTokens:
    """Token i (i < len(STEPS)) must be one of STEPS[i]; its state hands every token to ADVANCER."""

    def start(self) -> _DeferringState:
        return _DeferringState(ADVANCER)


def test_the_engine_hands_a_steps_tokens_to_the_advancer_in_one_call_with_and_without_lookahead():
    # Greedy and unseeded, so that the engine looks ahead; two prompts, so that the completions differ.
    params = SamplingParams(max_tokens=12, temperature=0.0, n=2, ignore_eos=True, constraint=DeferredFirstTokens())
    requests = {"a": (PROMPT, params), "b": ([7, *PROMPT], params)}
    ADVANCER.calls.clear()
    ordinary = run_all(LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig()), requests)
    assert max(len(call) for call in ADVANCER.calls) == 4  # a step's four tokens in one call
    ADVANCER.calls.clear()
    runner = FollowingToyRunner()
    ahead = run_all(LLMEngine(runner, ToyTokenizer(), EngineConfig()), requests)
    assert runner.followed > 0
    assert max(len(call) for call in ADVANCER.calls) == 4
    for request_id in requests:
        completions = [list(output.token_ids) for output in ahead[request_id].outputs]
        assert completions == [list(output.token_ids) for output in ordinary[request_id].outputs]
        for tokens in completions:
            assert all(token in allowed for token, allowed in zip(tokens, STEPS, strict=False)), tokens

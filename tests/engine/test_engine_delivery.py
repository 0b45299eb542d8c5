"""When the step loop hands a step's outputs out: with nothing in flight, before the host prepares the next step."""

from __future__ import annotations

from engine_fakes import ToyRunner, ToyTokenizer

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest, run_to_completion


class LaunchRecordingRunner(ToyRunner):
    """A runner that cannot launch ahead (no lookahead), recording each launch in `events`."""

    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events

    def launch(self, batch):
        self.events.append("launch")
        sampled = self.execute(batch)
        return lambda: sampled


def test_a_steps_tokens_leave_before_the_next_step_is_launched_when_none_runs_ahead() -> None:
    """An eager step's launch (a prefill) can take as long as the step: a first token waiting behind it would
    reach its client a whole step late."""
    events: list = []
    engine = LLMEngine(LaunchRecordingRunner(events), ToyTokenizer(), EngineConfig())
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    run_to_completion(engine, [AddRequest("a", [1, 2, 3], params, 0.0)], lambda output: events.append("token"))
    assert events == ["launch", "token", "launch", "token", "launch", "token"]

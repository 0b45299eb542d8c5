"""Where a step's time goes (schedule, launch, wait, postprocess, deliver), summed in EngineStats."""

from __future__ import annotations

import time

from engine_fakes import ToyRunner, ToyTokenizer, run_all, step

from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import STEP_PHASES
from tkr_embed.engine.sampling_params import SamplingParams

DEVICE_S = 0.02
LAUNCH_S = 0.005


class SlowDeviceRunner(ToyRunner):
    """Launch takes LAUNCH_S of host work; the device then takes DEVICE_S, spent in the returned wait."""

    def launch(self, batch):
        time.sleep(LAUNCH_S)
        sampled = self.execute(batch)
        done_at = time.perf_counter() + DEVICE_S
        return lambda: (time.sleep(max(0.0, done_at - time.perf_counter())), sampled)[1]


def test_offline_steps_account_for_the_device_wait_and_the_input_building() -> None:
    engine = LLMEngine(SlowDeviceRunner(), ToyTokenizer(), EngineConfig())
    run_all(engine, {"a": ([1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))})
    stats = engine.stats()
    assert stats.steps == 5  # one prefill step (first token) + four decode steps
    phases = stats.step_phase_seconds
    assert set(phases) == set(STEP_PHASES)
    assert 5 * DEVICE_S * 0.9 <= phases["wait"] < 5 * (DEVICE_S + LAUNCH_S) + 0.5
    assert phases["launch"] >= 5 * LAUNCH_S * 0.9
    assert phases["deliver"] < 0.05  # the offline loop hands outputs to a list
    assert step(engine) == [] and engine.stats().steps == 5  # an empty step is not counted


async def test_async_engine_steps_include_the_hand_over_to_the_event_loop() -> None:
    engine = AsyncEngine.from_runner(SlowDeviceRunner(), ToyTokenizer(), EngineConfig())
    outputs = [
        o async for o in engine.generate("a", [1, 2, 3], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    ]
    assert outputs[-1].finished
    stats = engine.stats()
    assert stats.steps == 4
    assert stats.step_phase_seconds["wait"] >= 4 * DEVICE_S * 0.9
    assert stats.step_phase_seconds["launch"] >= 4 * LAUNCH_S * 0.9
    assert stats.step_phase_seconds["deliver"] > 0.0
    await engine.shutdown()

"""The engine's counters that /metrics exports: finish reasons, preemptions, prefix-cache lookups. They count what
the requests' outputs show, they reach the server from the engine process, and a restarted engine counts anew."""

from __future__ import annotations

import asyncio
from collections import Counter

from engine_fakes import ToyBuild, ToyRunner, ToyTokenizer, step

from tkr_embed.engine.config import EngineConfig
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.engine.llm_engine import LLMEngine
from tkr_embed.engine.outputs import EngineStats, RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.metrics import ServerMetrics


def _serve(engine: LLMEngine, abort_after_first_step: tuple[str, ...] = ()) -> dict[str, RequestOutput]:
    finals: dict[str, RequestOutput] = {}
    first = True
    while engine.has_unfinished_requests():
        finals.update({output.request_id: output for output in step(engine) if output.finished})
        if first:
            for request_id in abort_after_first_step:
                finals[request_id] = engine.abort_request(request_id)
            first = False
    return finals


def _reasons(finals: dict[str, RequestOutput]) -> dict[str, int]:
    return dict(Counter(c.finish_reason.value for output in finals.values() for c in output.outputs))


def test_finish_reasons_are_counted_once_per_completion_as_the_outputs_end() -> None:
    engine = LLMEngine(ToyRunner(eos_logit=100.0), ToyTokenizer(), EngineConfig())  # greedy picks EOS at once
    engine.add_request("eos", [1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0))
    engine.add_request("two", [4, 5, 6], SamplingParams(max_tokens=3, temperature=0.0, n=2, ignore_eos=True))
    engine.add_request("left", [7, 8, 9], SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True))
    finals = _serve(engine, abort_after_first_step=("left",))
    assert _reasons(finals) == {"stop": 1, "length": 2, "abort": 1}
    assert engine.stats().finish_reasons == {"stop": 1, "length": 2, "abort": 1}
    engine.abort_request("eos")  # already finished: nothing more ends
    assert engine.stats().finish_reasons == {"stop": 1, "length": 2, "abort": 1}


def test_one_preemption_is_counted_when_two_requests_cannot_both_fit() -> None:
    # 5 blocks of 4 slots. Each request computes 4 + 11 tokens (4 blocks), so the two cannot both finish side by
    # side: when both need their third block, the newer one (b) is preempted, waits until a has finished and
    # then fits alone.
    engine = LLMEngine(ToyRunner(num_kv_blocks=5), ToyTokenizer(), EngineConfig(enable_prefix_caching=False))
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    engine.add_request("a", [1, 2, 3, 4], params)
    engine.add_request("b", [5, 6, 7, 8], params)
    finals = _serve(engine)
    assert [len(finals[r].outputs[0].token_ids) for r in "ab"] == [12, 12]
    assert engine.stats().preemptions == 1


def test_prefix_cache_queries_count_prompt_tokens_and_hits_the_cached_blocks() -> None:
    engine = LLMEngine(ToyRunner(), ToyTokenizer(), EngineConfig())  # blocks of 4 tokens
    prompt = list(range(1, 15))  # 14 tokens: 3 full blocks
    params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    engine.add_request("first", prompt, params)
    first = _serve(engine)["first"]
    engine.add_request("again", prompt, params)
    again = _serve(engine)["again"]
    assert (first.num_cached_prompt_tokens, again.num_cached_prompt_tokens) == (0, 12)
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (28, 12)


async def _run(engine: ProcessEngine, request_id: str, prompt: list[int], params: SamplingParams) -> RequestOutput:
    return [output async for output in engine.generate(request_id, prompt, params)][-1]


def _counted(stats: EngineStats) -> tuple:
    return stats.prefix_cache_queries, stats.prefix_cache_hits, stats.preemptions, stats.finish_reasons


def test_the_counters_cross_the_process_pipe_and_a_restarted_engine_never_lowers_metrics() -> None:
    # n=2 in a pool of 5 blocks of 4 slots: the two completions need 4 + 3 blocks (they share the prompt's), so
    # one is preempted; the same request in this process counts the same.
    params = SamplingParams(max_tokens=12, temperature=0.0, n=2, ignore_eos=True)
    build = ToyBuild(num_kv_blocks=5)
    local = build()
    local.add_request("pair", [1, 2, 3, 4], params)
    _serve(local)
    assert local.stats().preemptions >= 1 and local.stats().finish_reasons == {"length": 2}

    metrics = ServerMetrics()
    metrics.bind_model("toy")

    async def scenario() -> tuple[EngineStats, EngineStats]:
        engine = ProcessEngine(build)
        try:
            await _run(engine, "pair", [1, 2, 3, 4], params)
            before = engine.stats()
            metrics.update_engine(before)
            engine._process.kill()
            for _ in range(500):
                if engine.dead_reason is not None:
                    break
                await asyncio.sleep(0.01)
            await engine.restart()
            await _run(engine, "after", [9, 10, 11], SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))
            after = engine.stats()
            metrics.update_engine(after)
            return before, after
        finally:
            await engine.shutdown()

    before, after = asyncio.run(scenario())
    assert _counted(before) == _counted(local.stats())
    assert after.engine_id != before.engine_id
    assert _counted(after) == (3, 0, 0, {"length": 1})  # the new engine process counts from zero
    exported = {
        (sample.name, sample.labels.get("finished_reason")): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
    }
    assert exported[("tkr_prefix_cache_queries_total", None)] == before.prefix_cache_queries + 3
    assert exported[("tkr_num_preemptions_total", None)] == before.preemptions
    assert exported[("tkr_request_success_total", "length")] == 3

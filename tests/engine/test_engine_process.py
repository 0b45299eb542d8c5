"""ProcessEngine: the step loop in a child process (the demo checkpoint on CPU), against the in-process engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tkr_embed.api.engine_factory import ensure_demo_checkpoint
from tkr_embed.builder import ProcessBuild
from tkr_embed.engine.args import EngineArgs
from tkr_embed.engine.async_engine import AsyncEngine
from tkr_embed.engine.engine_process import ProcessEngine
from tkr_embed.engine.errors import EngineDeadError, EngineOverloadedError, InvalidRequestError
from tkr_embed.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(ensure_demo_checkpoint(tmp_path_factory.mktemp("demo") / "ckpt"))


def _builder(path: str, **config) -> ProcessBuild:
    return ProcessBuild(EngineArgs(model=path, device="cpu", num_kv_blocks=128, **config), "WARNING", False)


REQUESTS = [
    ("plain", [1000, 2000, 3000, 4000, 5000], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)),
    ("stop", [7, 8, 9, 10] * 4, SamplingParams(max_tokens=16, temperature=0.0, stop=["a"], ignore_eos=True)),
    ("two", [42] * 30, SamplingParams(max_tokens=6, temperature=0.0, n=2, logprobs=2, ignore_eos=True)),
]


async def _collect(engine, request_id, prompt, params) -> dict:
    updates = []
    async for output in engine.generate(request_id, prompt, params):
        updates.append(output)
    last = updates[-1]
    return {
        "prompt": list(last.prompt_token_ids),
        "finished": [u.finished for u in updates][-1],
        "completions": [(c.index, list(c.token_ids), c.text, c.finish_reason, c.stop_reason) for c in last.outputs],
        # the deltas add up to the cumulative fields, as in process
        "joined": [
            (
                "".join(c.new_text for u in updates for c in u.outputs if c.index == i),
                [t for u in updates for c in u.outputs if c.index == i for t in c.new_token_ids],
            )
            for i in range(len(last.outputs))
        ],
        "logprobs": [
            [
                (lp.token_id, lp.logprob)
                for u in updates
                for c in u.outputs
                if c.index == i
                for lp in (c.new_logprobs or [])
            ]
            for i in range(len(last.outputs))
        ],
        "completion_tokens": last.num_completion_tokens,
        # a completion's whole text comes once it has finished (CompletionOutput.text)
        "texts_before_finish": {c.text for u in updates for c in u.outputs if c.finish_reason is None},
        "updates_before_finish": sum(1 for u in updates for c in u.outputs if c.finish_reason is None),
    }


async def _run_all(engine) -> dict:
    results = await asyncio.gather(*(_collect(engine, rid, prompt, params) for rid, prompt, params in REQUESTS))
    return dict(zip([rid for rid, _, _ in REQUESTS], results, strict=False))


def test_outputs_match_the_engine_in_this_process(demo_path):
    async def both():
        child = ProcessEngine(_builder(demo_path))
        try:
            in_child = await _run_all(child)
            stats = child.stats()
        finally:
            await child.shutdown()
        local = AsyncEngine(_builder(demo_path)())
        try:
            in_process = await _run_all(local)
        finally:
            await local.shutdown()
        return in_child, in_process, stats, child._process.exitcode

    in_child, in_process, stats, exitcode = asyncio.run(both())
    # the same tokens; logprobs as close as two batchings of the same float math allow (rounding them to a fixed
    # number of places fails whenever one sits on a rounding boundary)
    child_lps = {name: result.pop("logprobs") for name, result in in_child.items()}
    local_lps = {name: result.pop("logprobs") for name, result in in_process.items()}
    for results in (in_child, in_process):  # how many updates carried a token depends on the timing, not the engine
        assert all(result.pop("updates_before_finish") > 2 for result in results.values())
    assert in_child == in_process
    for name, rows in child_lps.items():
        assert [[t for t, _ in row] for row in rows] == [[t for t, _ in row] for row in local_lps[name]]
        for row, local_row in zip(rows, local_lps[name], strict=True):
            assert all(abs(a - b) <= 1e-4 for (_, a), (_, b) in zip(row, local_row, strict=True))
    for result in in_child.values():
        assert [(text, ids) for _, ids, text, _, _ in result["completions"]] == result["joined"]
    assert in_child["stop"]["completions"][0][3].value in ("stop", "length")
    assert all(result["texts_before_finish"] == {""} for result in in_child.values())
    assert len(in_child["two"]["completions"]) == 2 and all(len(lp) == 6 for lp in child_lps["two"])
    assert in_child["plain"]["prompt"] == REQUESTS[0][1] and in_child["plain"]["completion_tokens"] == 12
    # the last stats the child sent: everything finished, every block back
    assert (stats.running, stats.waiting, stats.kv_blocks_used, stats.requests_finished) == (0, 0, 0, 3)
    assert exitcode == 0


def test_prompt_logprobs_cross_the_pipe_once_and_max_tokens_zero_ends_empty(demo_path):
    scoring = {
        "score": ([1000 + 7 * i for i in range(40)], SamplingParams(max_tokens=0, prompt_logprobs=2)),
        "score_then_generate": (
            [2000 + 3 * i for i in range(25)],
            SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True, prompt_logprobs=1),
        ),
    }

    async def updates_of(engine) -> dict[str, list]:
        async def one(request_id, prompt, params):
            return [update async for update in engine.generate(request_id, prompt, params)]

        results = await asyncio.gather(*(one(rid, prompt, params) for rid, (prompt, params) in scoring.items()))
        return dict(zip(scoring, results, strict=True))

    async def both():
        child = ProcessEngine(_builder(demo_path, max_num_batched_tokens=16))
        try:
            in_child = await updates_of(child)
        finally:
            await child.shutdown()
        local = AsyncEngine(_builder(demo_path, max_num_batched_tokens=16)())
        try:
            in_process = await updates_of(local)
        finally:
            await local.shutdown()
        return in_child, in_process

    in_child, in_process = asyncio.run(both())
    for request_id, (prompt, _) in scoring.items():
        carrying = [
            [u.prompt_logprobs for u in updates if u.prompt_logprobs is not None]
            for updates in (in_child[request_id], in_process[request_id])
        ]
        assert [len(c) for c in carrying] == [1, 1]
        child_scores, local_scores = carrying[0][0], carrying[1][0]
        assert child_scores[0] is None and [lp.token_id for lp in child_scores[1:]] == prompt[1:]
        for mine, theirs in zip(child_scores[1:], local_scores[1:], strict=True):
            assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-4)
            assert [t for t, _ in mine.top_logprobs] == [t for t, _ in theirs.top_logprobs]
    final = in_child["score"][-1]
    assert final.finished and [(c.token_ids, c.finish_reason.value) for c in final.outputs] == [([], "length")]
    assert len(in_child["score_then_generate"][-1].outputs[0].token_ids) == 3


def test_bad_requests_are_refused_before_reaching_the_child(demo_path):
    async def run():
        engine = ProcessEngine(_builder(demo_path))
        try:
            with pytest.raises(InvalidRequestError) as too_long:
                await anext(engine.generate("long", [1] * 5, SamplingParams(max_tokens=10**6)))
            with pytest.raises(InvalidRequestError) as bad_id:
                await anext(engine.generate("bad", [201088], SamplingParams(max_tokens=2)))
            return too_long.value.param, bad_id.value.param, engine.stats().requests_finished
        finally:
            await engine.shutdown()

    assert asyncio.run(run()) == ("max_tokens", "prompt", 0)


def test_a_full_queue_refuses_in_the_child_and_the_stream_raises(demo_path):
    async def run():
        engine = ProcessEngine(_builder(demo_path, max_num_seqs=1, max_waiting=1))
        await engine.start()
        try:
            busy = asyncio.ensure_future(
                _collect(engine, "busy", [5] * 8, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
            )
            while engine.stats().running == 0:  # the first request runs: the others meet a full queue
                await asyncio.sleep(0.01)
            params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
            outcomes = await asyncio.gather(
                *(_collect(engine, f"r{i}", [6] * 4, params) for i in range(3)), return_exceptions=True
            )
            first = await busy
            return first["completion_tokens"], outcomes
        finally:
            await engine.shutdown()

    first_tokens, outcomes = asyncio.run(run())
    assert first_tokens == 40
    refused = [o for o in outcomes if isinstance(o, EngineOverloadedError)]
    served = [o for o in outcomes if isinstance(o, dict)]
    assert len(refused) >= 1 and len(refused) + len(served) == 3
    assert all(o["completion_tokens"] == 2 for o in served)


def test_a_consumer_that_leaves_frees_its_blocks_in_the_child(demo_path):
    async def run():
        engine = ProcessEngine(_builder(demo_path))
        try:
            stream = engine.generate("left", [3] * 40, SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True))
            await anext(stream)
            await anext(stream)
            await stream.aclose()
            for _ in range(500):
                stats = engine.stats()
                if stats.running == 0 and stats.kv_blocks_used == 0:
                    break
                await asyncio.sleep(0.01)
            return stats, engine._progress
        finally:
            await engine.shutdown()

    stats, progress = asyncio.run(run())
    assert (stats.running, stats.waiting, stats.kv_blocks_used) == (0, 0, 0)
    assert progress == {}  # the abort's final update cleared the request's state here


def test_a_dead_child_fails_every_stream_and_refuses_new_requests(demo_path):
    async def run():
        engine = ProcessEngine(_builder(demo_path))
        stream = engine.generate("doomed", [3] * 10, SamplingParams(max_tokens=10**3, temperature=0.0, ignore_eos=True))
        await anext(stream)
        engine._process.kill()
        with pytest.raises(EngineDeadError):
            while True:
                await anext(stream)
        with pytest.raises(EngineDeadError):
            await anext(engine.generate("after", [3], SamplingParams(max_tokens=2)))
        running = engine.is_running
        await engine.shutdown()
        return running

    assert asyncio.run(run()) is False


def test_a_child_that_cannot_build_the_engine_fails_start(tmp_path: Path):
    async def run():
        await ProcessEngine(_builder(str(tmp_path / "missing"))).start()

    with pytest.raises(RuntimeError, match="could not start.*missing"):
        asyncio.run(run())


def test_shutdown_ends_open_streams_and_the_child(demo_path):
    async def run():
        engine = ProcessEngine(_builder(demo_path))
        stream = engine.generate("open", [3] * 10, SamplingParams(max_tokens=10**3, temperature=0.0, ignore_eos=True))
        await anext(stream)
        await asyncio.wait_for(engine.shutdown(graceful=False), 60)
        ending = []
        try:
            async for output in stream:
                ending.append(output)
        except EngineDeadError as exc:
            ending.append(exc)
        return ending[-1], engine._process.exitcode

    last, exitcode = asyncio.run(run())
    assert exitcode == 0
    assert isinstance(last, EngineDeadError) or (last.finished and last.outputs[0].finish_reason.value == "abort")

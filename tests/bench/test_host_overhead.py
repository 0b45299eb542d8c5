"""bench/host_overhead.py: a live server around a runner that computes nothing serves every stream whole, and the
tool reports its throughput and both processes' CPU per 1,000 tokens."""

from __future__ import annotations

import json
import socket
import sys

import pytest
from bench_support import load_bench_module

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tool reads /proc")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_stream_is_served_and_both_processes_are_measured(capsys) -> None:
    module = load_bench_module("host_overhead")
    argv = ["--streams", "16", "--step-ms", "0", "--repeat", "1", "--prompt-tokens", "16", "--max-tokens", "64"]
    assert module.main([*argv, "--port", str(_free_port())]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["succeeded"] == 16 and line["output_tok_s"] > 0
    assert line["server_cpu_ms_per_1k_tokens"] > 0 and line["engine_cpu_ms_per_1k_tokens"] > 0


def test_idle_ttft_reports_percentiles_of_the_requests_after_warm_up(capsys) -> None:
    module = load_bench_module("host_overhead")
    argv = ["--idle-ttft", "5", "--prompt-tokens", "32", "--port", str(_free_port())]
    assert module.main(argv) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["requests"] == 5 and line["prompt_tokens"] == 32
    ttft = line["idle_ttft_ms"]
    assert 0 < ttft["p50"] <= ttft["p90"] <= ttft["p99"]


def test_chat_streams_answer_through_the_harmony_parser(capsys) -> None:
    """The runner opens each answer as gpt-oss does, so every chat stream's tokens arrive as content."""
    module = load_bench_module("host_overhead")
    argv = ["--endpoint", "chat", "--streams", "4", "--step-ms", "0", "--repeat", "1", "--prompt-words", "20"]
    assert module.main([*argv, "--max-tokens", "32", "--port", str(_free_port())]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["endpoint"] == "chat" and line["succeeded"] == 4
    assert line["ttft_p50_ms"] is not None  # text reached the client: the parser took the answer as content
    assert line["output_tok_s"] > 0 and line["server_cpu_ms_per_1k_tokens"] > 0


def test_the_null_runner_opens_each_chat_answer_as_gpt_oss_does(monkeypatch) -> None:
    from tkr_embed.backends import factory
    from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
    from tkr_embed.engine.sampling_params import SamplingParams
    from tkr_embed.harmony.tokenizer import get_tokenizer

    module = load_bench_module("host_overhead")
    monkeypatch.setattr(factory, "create_runner", factory.create_runner)  # put back after the test
    module.install_null_runner(0.0, harmony=True)
    runner = factory.create_runner()

    def answer(seq_id: int, length: int) -> list[int]:
        step = [BatchEntry(seq_id, [1], 100 + i, [0], True, SamplingParams()) for i in range(length)]
        return [runner.execute(ScheduledBatch([entry]))[0].token_id for entry in step]

    tokens = answer(7, 6)
    assert get_tokenizer().decode(tokens[:3]) == "<|channel|>final<|message|>"
    assert not any(get_tokenizer().is_special(token) for token in tokens[3:])
    assert answer(8, 3) == tokens[:3]  # every sequence opens its own answer


def test_a_json_schema_holds_every_answer_and_the_runner_keeps_to_its_masks(capsys) -> None:
    module = load_bench_module("host_overhead")
    schema = str(module.BENCH / "schemas" / "order.json")
    argv = ["--endpoint", "chat", "--json-schema", schema, "--streams", "4", "--step-ms", "0", "--repeat", "1"]
    assert module.main([*argv, "--prompt-words", "20", "--max-tokens", "256", "--port", str(_free_port())]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["succeeded"] == 4 and line["ttft_p50_ms"] is not None


def test_the_null_runner_takes_an_id_its_mask_allows(monkeypatch) -> None:
    from tkr_embed.backends import factory
    from tkr_embed.engine.constraints import PendingMask
    from tkr_embed.engine.runner import BatchEntry, ScheduledBatch
    from tkr_embed.engine.sampling_params import SamplingParams

    module = load_bench_module("host_overhead")
    monkeypatch.setattr(factory, "create_runner", factory.create_runner)
    module.install_null_runner(0.0)
    runner = factory.create_runner()
    allowed = (5, 70_001, 200_005)
    entries = [
        BatchEntry(seq, [1], 100 + seq, [0], True, SamplingParams(), allowed_tokens=PendingMask.of_ids(allowed))
        for seq in range(12)
    ]
    picks = [token.token_id for token in runner.execute(ScheduledBatch(entries))]
    assert set(picks) <= set(allowed) and len(set(picks)) > 1
    free = runner.execute(ScheduledBatch([BatchEntry(99, [1], 7, [0], True, SamplingParams())]))[0].token_id
    assert 1000 <= free < 21000  # an ordinary text token where nothing is restricted

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

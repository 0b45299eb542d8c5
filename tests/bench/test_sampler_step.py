"""bench/sampler_step.py: one JSON line per width and kind of request, each with the step's time."""

from __future__ import annotations

import json

from bench_support import load_bench_module


def test_sampler_step_reports_every_kind_at_every_width(capsys) -> None:
    module = load_bench_module("sampler_step")
    assert module.main(["--rows", "1", "3", "--history", "16", "--repeat", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["rows"], line["kind"]) for line in lines] == [(r, k) for r in (1, 3) for k in module.KINDS]
    assert all(line["device"] == "cpu" and line["step_ms"] > 0 for line in lines)

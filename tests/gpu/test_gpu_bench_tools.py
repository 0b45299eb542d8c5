"""The benchmark tools' own logic (CPU): the offline bench's JSON and the load generator's statistics."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tkr_embed.cli import main


def _load_generator():
    path = Path(__file__).resolve().parents[2] / "bench" / "load_generator.py"
    spec = importlib.util.spec_from_file_location("tkr_bench_load_generator", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_offline_bench_prints_json_with_the_three_runs(capsys, demo_model_dir):
    code = main(["bench", "--model", str(demo_model_dir), "--device", "cpu", "--streams", "3",
                 "--prompt-len", "6", "--output-len", "4", "--long-prompt-len", "20"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    runs = {run["name"]: run for run in report["runs"]}
    assert list(runs) == ["decode_batch1", "parallel_streams", "long_prompt_ttft"]
    assert runs["decode_batch1"]["output_tokens"] == 4
    assert runs["parallel_streams"]["output_tokens"] == 12 and runs["parallel_streams"]["prompt_tokens"] == 18
    assert runs["long_prompt_ttft"]["output_tokens"] == 1


def test_load_generator_percentiles_and_summary():
    lg = _load_generator()
    assert lg.percentiles([5.0, 1.0, 3.0, 2.0, 4.0]) == {"p50": 3.0, "p90": 5.0, "p99": 5.0}
    assert lg.percentiles([]) == {"p50": None, "p90": None, "p99": None}
    ok = lg.RequestTiming(start=0.0, first_token=0.1, end=0.4, token_times=[0.1, 0.2, 0.4], output_tokens=3)
    failed = lg.RequestTiming(start=0.0, end=0.05, error="HTTP 429")
    summary = lg.summarize([ok, failed], wall_seconds=0.5)
    assert summary["succeeded"] == 1 and summary["errors"] == ["HTTP 429"]
    assert summary["output_tok_s"] == 6.0
    assert round(summary["ttft_ms"]["p50"], 6) == 100.0
    assert [round(v, 6) for v in (summary["itl_ms"]["p50"], summary["itl_ms"]["p99"])] == [100.0, 200.0]

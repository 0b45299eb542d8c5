"""`tkr-embed bench` on the CPU: the offline engine over the demo checkpoint, its JSON report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from tkr_embed.bench_args import add_bench_arguments
from tkr_embed.bench_cli import bench_args


def _bench(*options: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tkr_embed.cli",
            "bench",
            "--device",
            "cpu",
            "--streams",
            "3",
            "--prompt-len",
            "16",
            "--output-len",
            "4",
            "--long-prompt-len",
            "40",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("options", "budget", "idle"),
    [((), 8192, None), (("--max-num-batched-tokens", "32", "--max-num-batched-tokens-idle", "64"), 32, 64)],
)
def test_the_bench_reports_its_runs_and_the_step_budgets(options, budget, idle) -> None:
    """Each run generates the tokens asked for; the report names the step budgets the engine ran with (on the CPU
    a step without decodes keeps max_num_batched_tokens unless told otherwise)."""
    report = _bench(*options)
    assert (report["max_num_batched_tokens"], report["max_num_batched_tokens_idle"]) == (budget, idle)
    runs = {run["name"]: run for run in report["runs"]}
    assert list(runs) == ["decode_batch1", "parallel_streams", "long_prompt_ttft"]
    assert [runs[name]["output_tokens"] for name in runs] == [4, 12, 1]
    assert runs["parallel_streams"]["output_tok_s"] > 0 and runs["long_prompt_ttft"]["ttft_ms"]["p50"] > 0


def test_several_widths_run_in_turn_on_one_engine_and_each_gets_a_sweep_row() -> None:
    """`--streams 1 3 2`: one engine runs each width in the order given; each width is a parallel_streams run and a
    sweep row with its own output tokens, and the build time is reported."""
    report = _bench("--streams", "1", "3", "2")
    assert report["max_num_seqs"] == 64 and report["ready_s"] > 0
    names = [run["name"] for run in report["runs"]]
    assert names == ["decode_batch1", "parallel_streams", "parallel_streams", "parallel_streams", "long_prompt_ttft"]
    assert [(row["streams"], row["output_tok_s"] > 0) for row in report["sweep"]] == [(1, True), (3, True), (2, True)]
    assert [run["output_tokens"] for run in report["runs"][1:4]] == [4, 12, 8]
    assert all(row["itl_ms"]["p50"] > 0 and row["ttft_ms"]["p99"] > 0 for row in report["sweep"])


@pytest.mark.parametrize(
    ("argv", "max_num_seqs"),
    [
        ([], None),
        (["--streams", "1", "64"], None),
        (["--streams", "1", "16", "256", "128"], 256),
        (["--streams", "300", "--max-num-seqs", "100"], 100),
    ],
)
def test_the_engine_runs_the_widest_width_at_once_unless_told(argv: list[str], max_num_seqs: int | None) -> None:
    """max_num_seqs: the largest width where the device's default (64 on this CPU) would not run it at once, else
    the device's default (None), or --max-num-seqs."""
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    assert bench_args(parser.parse_args(argv), "m").max_num_seqs == max_num_seqs


def test_a_json_schema_adds_a_structured_run_and_its_free_twin_of_equal_lengths(tmp_path) -> None:
    """`--json-schema`: the widest width's prompts (twice over) answered under the schema, then without it, each cut
    to its structured answer's length: the same tokens per request, so the report's slowdown is the schema's cost.
    A structured answer ends when its JSON is complete, before max_tokens."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
    report = _bench("--json-schema", str(schema), "--structured-max-tokens", "200")
    runs = {run["name"]: run for run in report["runs"]}
    structured, free = runs["structured"], runs["structured_free"]
    assert len(structured["output_lens"]) == 6
    assert structured["output_lens"] == free["output_lens"] and structured["output_tokens"] == free["output_tokens"]
    assert min(structured["output_lens"]) >= 1 and any(length < 200 for length in structured["output_lens"])
    assert report["structured_slowdown"] == round(1 - structured["output_tok_s"] / free["output_tok_s"], 4)


def test_a_json_schema_the_grammar_engine_cannot_enforce_ends_the_bench_before_it_builds(tmp_path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "string", "pattern": "(?<=x)a"}))
    done = subprocess.run(
        [sys.executable, "-m", "tkr_embed.cli", "bench", "--device", "cpu", "--json-schema", str(schema)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert f"--json-schema {schema}:" in done.stderr and "look-around" in done.stderr


def test_penalties_apply_to_the_decode_runs_and_the_report_names_them() -> None:
    report = _bench("--repetition-penalty", "1.1", "--presence-penalty", "0.5", "--frequency-penalty", "-0.2")
    assert report["penalties"] == {"repetition": 1.1, "presence": 0.5, "frequency": -0.2}
    assert [run["output_tokens"] for run in report["runs"]] == [4, 12, 1]

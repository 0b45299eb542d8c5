"""`tkr-embed bench` on the CPU: the offline engine over the demo checkpoint, its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


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

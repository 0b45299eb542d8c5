"""The benchmark tools' own logic (CPU): the offline bench's JSON and the load generator's statistics."""

from __future__ import annotations

import json

from bench_support import load_bench_module

from tkr_embed.cli import main


def _load_generator():
    return load_bench_module("load_generator")


def test_offline_bench_prints_json_with_the_three_runs(capsys, demo_model_dir):
    code = main(
        [
            "bench",
            "--model",
            str(demo_model_dir),
            "--device",
            "cpu",
            "--streams",
            "3",
            "--prompt-len",
            "6",
            "--output-len",
            "4",
            "--long-prompt-len",
            "20",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    runs = {run["name"]: run for run in report["runs"]}
    assert list(runs) == ["decode_batch1", "parallel_streams", "long_prompt_ttft"]
    assert runs["decode_batch1"]["output_tokens"] == 4
    assert runs["parallel_streams"]["output_tokens"] == 12 and runs["parallel_streams"]["prompt_tokens"] == 18
    assert runs["long_prompt_ttft"]["output_tokens"] == 1
    assert report["max_num_batched_tokens"] == 8192  # the engine's default
    streams = runs["parallel_streams"]
    # 3 streams x 4 tokens: 3 first tokens and 3 x 3 gaps, each positive; a request ends after its first token
    assert 0 < streams["ttft_ms"]["p50"] <= streams["e2e_ms"]["p50"]
    assert streams["itl_ms"]["p50"] > 0 and streams["itl_ms"]["p99"] >= streams["itl_ms"]["p50"]
    assert runs["long_prompt_ttft"]["itl_ms"] == {"p50": None, "p90": None, "p99": None}  # one token: no gap


def test_offline_bench_takes_the_step_token_budget_and_warms_the_streams(capsys, demo_model_dir):
    code = main(
        [
            "bench",
            "--model",
            str(demo_model_dir),
            "--device",
            "cpu",
            "--streams",
            "2",
            "--prompt-len",
            "6",
            "--output-len",
            "3",
            "--long-prompt-len",
            "8",
            "--max-num-batched-tokens",
            "64",
            "--warmup-streams",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["max_num_batched_tokens"] == 64
    assert [run["name"] for run in report["runs"]] == ["decode_batch1", "parallel_streams", "long_prompt_ttft"]
    assert report["runs"][1]["output_tokens"] == 6


def test_load_generator_sends_token_prompts_with_ignore_eos_to_completions():
    lg = _load_generator()
    parser_args = ["--endpoint", "completions", "--prompt-tokens", "5", "--ignore-eos", "--max-tokens", "7"]
    args = _parse_load_args(lg, parser_args)
    route, body = lg.request_body(args, [1, 2, 3, 4, 5])
    assert route == "/v1/completions"
    assert body["prompt"] == [1, 2, 3, 4, 5] and body["ignore_eos"] is True and body["max_tokens"] == 7
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    route, body = lg.request_body(_parse_load_args(lg, []), "hello")
    assert route == "/v1/chat/completions" and "ignore_eos" not in body
    assert body["messages"] == [{"role": "user", "content": "hello"}]


def _parse_load_args(lg, argv: list[str]):
    captured = {}

    async def fake_run_load(args):
        captured["args"] = args
        return {}

    original = lg.run_load
    lg.run_load = fake_run_load
    try:
        lg.main(argv)
    finally:
        lg.run_load = original
    return captured["args"]


def test_completions_ignore_eos_extension_reaches_the_engine_parameters():
    from tkr_embed.harmony.tokenizer import get_tokenizer
    from tkr_embed.protocol.openai_completions import CompletionRequest
    from tkr_embed.services.completions import CompletionService
    from tkr_embed.services.context import ModelContext

    service = CompletionService(ModelContext(engine=None, tokenizer=get_tokenizer(), model_id="m", context_length=64))
    asked = service.prepare(
        CompletionRequest.model_validate({"prompt": [10, 11, 12], "max_tokens": 5, "ignore_eos": True})
    )
    plain = service.prepare(CompletionRequest.model_validate({"prompt": [10, 11, 12], "max_tokens": 5}))
    assert [p.params.ignore_eos for p in asked] == [True]
    assert [p.params.ignore_eos for p in plain] == [False]


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


def test_load_generator_sweeps_the_widths_in_turn_with_fresh_prompts_and_a_row_each(capsys, monkeypatch):
    """`--concurrency 1 4 2 --requests-per-stream 2`: each width in the order given, with at most its width in
    flight, 2 requests per stream, prompts no other width sent (no prefix-cache help), one JSON row per width."""
    lg = _load_generator()
    sent = []

    async def fake_drive(args, prompts, concurrency, start_at=None):
        sent.append((concurrency, prompts))
        timings = [lg.RequestTiming(start=0.0, first_token=0.1, end=0.3, token_times=[0.1, 0.3], output_tokens=2)]
        return timings * len(prompts), 0.0

    monkeypatch.setattr(lg, "_drive", fake_drive)
    argv = ["--endpoint", "completions", "--prompt-tokens", "8", "--ignore-eos", "--max-tokens", "2"]
    assert lg.main([*argv, "--concurrency", "1", "4", "2", "--requests-per-stream", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(width, len(prompts)) for width, prompts in sent] == [(1, 2), (4, 8), (2, 4)]
    all_prompts = [tuple(prompt) for _, prompts in sent for _, prompt in prompts]
    assert len(set(all_prompts)) == len(all_prompts) == 14
    assert [[index for index, _ in prompts] for _, prompts in sent] == [[0, 1], list(range(8)), list(range(4))]
    rows = [(row["concurrency"], row["requests"], row["output_tokens"]) for row in report["sweep"]]
    assert rows == [(1, 2, 4), (4, 8, 16), (2, 4, 8)]
    assert report["prompt_tokens"] == 8 and all(row["itl_ms"]["p50"] > 0 for row in report["sweep"])
    assert lg.main([*argv, "--concurrency", "3", "--requests", "5"]) == 0  # one width: the report as before
    single = json.loads(capsys.readouterr().out)
    assert "sweep" not in single and (single["concurrency"], single["requests"], single["output_tokens"]) == (3, 5, 10)

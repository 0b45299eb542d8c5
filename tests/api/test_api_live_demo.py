"""The real server: uvicorn + the real engine over the demo checkpoint (written on first start)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import torch
from live_server import live_server

from tkr_embed.api.server import create_app
from tkr_embed.config import Settings
from tkr_embed.engine.engine_process import ProcessEngine

HELLO = [{"role": "user", "content": "Hello"}]


# The same suite runs on both CPU backends: torch (the reference) and MLX (mlx-cpu on Linux).
BACKENDS = {"torch": {"device": "cpu"}, "mlx": {"device": "mlx", "quantization": "none"}}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def demo_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings]]:
    torch.set_num_threads(2)
    data_dir = tmp_path_factory.mktemp("live-data")
    settings = Settings(
        model=BACKENDS[request.param],  # no model path: the demo checkpoint is written and served
        engine={"max_num_seqs": 1, "max_waiting": 1, "kv_cache_blocks": 256},
        storage={"data_dir": str(data_dir)},
    )
    app = create_app(settings)
    with live_server(app) as url:
        yield url, settings, app


@pytest.fixture
def client(demo_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_demo_checkpoint_is_written_and_announced(demo_server):
    url, settings, _ = demo_server
    assert (settings.demo_model_dir / "config.json").is_file()
    info = httpx.get(url + "/info").json()
    assert info["demo_model"] is True
    assert info["model_path"] == str(settings.demo_model_dir)
    assert info["device"] in ("cpu", "mlx:cpu") and info["vocab_size"] == 201088 and info["context_length"] > 0
    assert info["device"].startswith("mlx") == (settings.model.device == "mlx")
    assert info["quantization_reason"]  # what the quantization setting chose, and why


def test_the_engine_runs_in_a_process_of_its_own(demo_server):
    engine = demo_server[2].state.server.engine
    assert isinstance(engine, ProcessEngine) and engine.is_running
    assert engine._process.pid != os.getpid()
    assert engine.stats().kv_blocks_total == 256  # the engine settings reached the child


def test_chat_completion_greedy_is_reproducible(client, demo_server):
    first = client.chat.completions.create(
        model=client.models.list().data[0].id, messages=HELLO, max_tokens=6, temperature=0
    )
    second = client.chat.completions.create(messages=HELLO, max_tokens=6, temperature=0, model=first.model)
    assert first.usage.completion_tokens <= 6 and first.usage.prompt_tokens > 10
    assert first.choices[0].finish_reason in ("length", "stop")
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.completion_tokens == second.usage.completion_tokens
    # The repeat reuses every full block of the prompt but the one holding its last token (prefix cache).
    block_size = demo_server[1].engine.block_size
    expected_cached = (second.usage.prompt_tokens - 1) // block_size * block_size
    assert expected_cached > 0
    assert second.usage.prompt_tokens_details.cached_tokens == expected_cached


def test_chat_stream_with_usage(client):
    model = client.models.list().data[0].id
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=HELLO,
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and 1 <= chunks[-1].usage.completion_tokens <= 5


def test_completions_and_native_generate(client, demo_server):
    model = client.models.list().data[0].id
    completion = client.completions.create(
        model=model, prompt="The sky is", max_tokens=4, temperature=0, seed=1, extra_body={"ignore_eos": True}
    )
    assert completion.usage.completion_tokens == 4 and completion.choices[0].finish_reason == "length"
    generated = httpx.post(
        demo_server[0] + "/generate", json={"text": "Hi", "max_tokens": 4, "temperature": 0}, timeout=120
    )
    assert generated.status_code == 200
    assert generated.json()["tokens_generated"] <= 4


def test_max_tokens_beyond_the_context(demo_server):
    context = httpx.get(demo_server[0] + "/info").json()["context_length"]
    response = httpx.post(demo_server[0] + "/v1/chat/completions", json={"messages": HELLO, "max_tokens": context})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


def wait_for_queue(url: str, running: int, waiting: int, timeout_s: float = 120.0) -> None:
    """Poll /health until the engine holds exactly `running` + `waiting` requests (a guard, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(url + "/health", timeout=30).json()
        if (health["active_requests"] - health["waiting_requests"], health["waiting_requests"]) == (running, waiting):
            return
        assert time.monotonic() < deadline, f"queue never reached {running} running, {waiting} waiting: {health}"
        time.sleep(0.02)


def test_full_queue_answers_503(demo_server):
    # max_num_seqs=1, max_waiting=1: one long stream holds the only running slot, one request waits,
    # and the next is refused. Each step waits for the engine's own counts, so a slow machine cannot
    # reorder them. `ignore_eos` keeps each request to its max_tokens whatever the demo model would say.
    url = demo_server[0]
    long_body = {"prompt": "Count", "max_tokens": 4000, "temperature": 0, "stream": True, "ignore_eos": True}
    short_body = {"prompt": "Count", "max_tokens": 3, "temperature": 0, "ignore_eos": True}
    with httpx.Client(base_url=url, timeout=120) as streaming, concurrent.futures.ThreadPoolExecutor(1) as pool:
        with streaming.stream("POST", "/v1/completions", json=long_body) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # held: dropping the iterator closes the stream
            assert next(lines).startswith("data: ")  # the first token: it is in the running batch
            queued = pool.submit(httpx.post, url + "/v1/completions", json=short_body, timeout=120)
            wait_for_queue(url, running=1, waiting=1)
            refused = httpx.post(url + "/v1/completions", json=short_body, timeout=120)
        # leaving the stream aborts the long request, which lets the queued one run
        served = queued.result(timeout=120)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert served.status_code == 200
    assert served.json()["usage"]["completion_tokens"] == 3
    wait_for_queue(url, running=0, waiting=0)  # the aborted stream left nothing behind


def test_load_generator_drives_the_live_server(demo_server, capsys, tmp_path):
    """bench/load_generator.py against the real server: every request streams exactly max_tokens tokens, or the
    length another report gave it (--max-tokens-each)."""
    import json

    from bench_support import load_bench_module

    module = load_bench_module("load_generator")
    url = demo_server[0]
    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    code = module.main(
        [
            "--url",
            url,
            "--endpoint",
            "completions",
            "--prompt-tokens",
            "12",
            "--ignore-eos",
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--max-tokens",
            "3",
            "--model",
            model,
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == [] and report["succeeded"] == 2
    assert report["output_tokens"] == 6 and report["output_tokens_each"] == [3, 3]
    assert report["ttft_ms"]["p50"] > 0 and report["ttft_ms"]["p50"] <= report["e2e_ms"]["p50"]
    lengths = tmp_path / "lengths.json"
    lengths.write_text(json.dumps({"output_tokens_each": [2, 5, 4]}))
    argv = ["--url", url, "--model", model, "--endpoint", "completions", "--prompt-tokens", "12", "--ignore-eos"]
    code = module.main([*argv, "--concurrency", "1", "--requests", "3", "--max-tokens-each", str(lengths)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["output_tokens_each"] == [2, 5, 4]


def test_engine_step_phases_reach_metrics(tmp_path):
    """The real server (gateway on, /metrics public): bench/engine_phases.py reads the engine's step time
    by phase around one request."""
    from bench_support import load_bench_module

    from tkr_embed.api.extensions import default_extensions

    module = load_bench_module("engine_phases")
    settings = Settings(
        env="development",
        model={"device": "cpu"},
        engine={"max_num_seqs": 1, "kv_cache_blocks": 64},
        security={"metrics_public": True},
        storage={"data_dir": str(tmp_path)},
    )
    with live_server(create_app(settings, extensions=default_extensions(settings))) as url:
        before = module.snapshot(url)
        llm = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        llm.completions.create(model=llm.models.list().data[0].id, prompt="Hello", max_tokens=4, temperature=0)
        phases = module.per_step_ms(before, module.snapshot(url))
    assert phases["steps"] >= 1
    assert set(phases) == {"steps", "schedule", "launch", "wait", "postprocess", "deliver"}
    assert phases["wait"] > 0 and all(value >= 0 for value in phases.values())

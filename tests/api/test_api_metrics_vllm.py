"""/metrics against the real server process on the demo checkpoint, read with Prometheus's own text parser: the
model's series carry the served model's name, the counters and histograms add up to what the API answered, and
every series vLLM's Grafana dashboard queries exists once `vllm:` is replaced by `tkr_` (docs/METRICS.md)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, demo_env, free_port, server_process

# A pool of 12 blocks of 16 slots (192 tokens): two long completions of one request cannot both fit in it.
KV_BLOCKS = 12
BLOCK_SIZE = 16

# Every series that vLLM's dashboard (examples/online_serving/prometheus_grafana/grafana.json in the vLLM
# repository) queries, by the name it queries, each with `model_name="$model_name"`; the Finish Reason panel also
# sums by `finished_reason`. docs/METRICS.md maps them to ours.
DASHBOARD_SERIES = (
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_per_output_token_seconds_bucket",
    "vllm:time_per_output_token_seconds_sum",
    "vllm:time_per_output_token_seconds_count",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:gpu_cache_usage_perc",
    "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket",
    "vllm:request_success_total",
    "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_decode_time_seconds_sum",
    "vllm:request_max_num_generation_tokens_sum",
    # the names newer vLLM releases give two of them
    "vllm:kv_cache_usage_perc",
    "vllm:inter_token_latency_seconds_bucket",
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("metrics-vllm")
    port = free_port()
    env = demo_env(
        demo_model_dir,
        workdir / "data",
        port,
        GENERATION_ENGINE__KV_CACHE_BLOCKS=str(KV_BLOCKS),
        GENERATION_ENGINE__BLOCK_SIZE=str(BLOCK_SIZE),
    )
    with server_process(workdir, env, port) as running:
        running.wait_healthy()
        yield running


@pytest.fixture(scope="module")
def model(server: ServerProcess) -> str:
    return httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]


def _scrape(server: ServerProcess) -> Samples:
    response = httpx.get(server.url + "/metrics", timeout=30)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, model: str, **labels: str) -> float:
    return samples[(name, frozenset({"model_name": model, **labels}.items()))]


def _scrape_until(server: ServerProcess, ready: Callable[[Samples], bool]) -> Samples:
    """The request histograms are observed just after each response is sent: scrape until they are in."""
    deadline = time.monotonic() + 30
    while True:
        samples = _scrape(server)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def _complete(server: ServerProcess, model: str, **body) -> dict:
    response = httpx.post(server.url + "/v1/completions", json={"model": model, "temperature": 0, **body}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_model_series_carry_the_served_model_name(server: ServerProcess, model: str) -> None:
    _complete(server, model, prompt="Hello", max_tokens=2, ignore_eos=True)
    samples = _scrape(server)
    names = {dict(labels)["model_name"] for _, labels in samples if "model_name" in dict(labels)}
    assert names == {model}
    assert _value(samples, "tkr_num_requests_running", model) == 0


def test_every_series_the_vllm_dashboard_queries_exists_after_the_rename(server: ServerProcess, model: str) -> None:
    samples = _scrape(server)
    labelled = {name for name, labels in samples if ("model_name", model) in labels}
    missing = [name for name in DASHBOARD_SERIES if name.replace("vllm:", "tkr_") not in labelled]
    assert not missing
    reasons = {dict(labels).get("finished_reason") for name, labels in samples if name == "tkr_request_success_total"}
    assert reasons == {"stop", "length", "abort"}


def test_finish_reasons_count_exactly_the_requests_made(server: ServerProcess, model: str) -> None:
    before = _scrape(server)
    lengths = [_complete(server, model, prompt=f"Count {i}", max_tokens=6, ignore_eos=True) for i in range(2)]
    text = lengths[0]["choices"][0]["text"]
    assert text.strip(), lengths[0]
    # The same greedy request, told to stop at a piece of what it wrote: it ends on that stop string.
    stopped = _complete(server, model, prompt="Count 0", max_tokens=6, ignore_eos=True, stop=[text.strip()[-1]])
    assert [answer["choices"][0]["finish_reason"] for answer in (*lengths, stopped)] == ["length", "length", "stop"]
    after = _scrape(server)

    def grew(reason: str) -> float:
        key = ("tkr_request_success_total", model)
        return _value(after, *key, finished_reason=reason) - _value(before, *key, finished_reason=reason)

    assert (grew("length"), grew("stop"), grew("abort")) == (2, 1, 0)


def test_token_histograms_add_up_to_the_usage_the_api_returned(server: ServerProcess, model: str) -> None:
    before = _scrape(server)
    answers = [
        _complete(server, model, prompt="A short one", max_tokens=3, ignore_eos=True),
        _complete(server, model, prompt="And a somewhat longer prompt than that", max_tokens=9, ignore_eos=True),
        _complete(server, model, prompt="Two at once", max_tokens=4, n=2, ignore_eos=True),
    ]
    prompt_tokens = sum(answer["usage"]["prompt_tokens"] for answer in answers)
    generated = sum(answer["usage"]["completion_tokens"] for answer in answers)
    assert generated == 3 + 9 + 2 * 4

    def grew(samples: Samples, name: str) -> float:
        return _value(samples, name, model) - _value(before, name, model)

    after = _scrape_until(server, lambda s: grew(s, "tkr_request_generation_tokens_count") >= len(answers))
    assert grew(after, "tkr_request_prompt_tokens_count") == len(answers)
    assert grew(after, "tkr_request_prompt_tokens_sum") == prompt_tokens
    assert grew(after, "tkr_request_generation_tokens_sum") == generated
    assert grew(after, "tkr_request_max_num_generation_tokens_sum") == 3 + 9 + 4
    assert grew(after, "tkr_prompt_tokens_total") == prompt_tokens
    assert grew(after, "tkr_generation_tokens_total") == generated


def test_prefix_cache_hits_grow_when_the_same_long_prompt_comes_again(server: ServerProcess, model: str) -> None:
    prompt = f"{uuid.uuid4().hex} " + " ".join(f"word{i}" for i in range(40))

    def counters() -> tuple[float, float]:
        samples = _scrape(server)
        return (
            _value(samples, "tkr_prefix_cache_queries_total", model),
            _value(samples, "tkr_prefix_cache_hits_total", model),
        )

    start = counters()
    first = _complete(server, model, prompt=prompt, max_tokens=1)
    middle = counters()
    again = _complete(server, model, prompt=prompt, max_tokens=1)
    end = counters()
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert prompt_tokens > 3 * BLOCK_SIZE
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (prompt_tokens - 1) // BLOCK_SIZE * BLOCK_SIZE
    assert (middle[0] - start[0], middle[1] - start[1]) == (prompt_tokens, 0)
    assert (end[0] - middle[0], end[1] - middle[1]) == (prompt_tokens, cached)


def test_preemptions_under_a_tiny_kv_pool_show_in_metrics(server: ServerProcess, model: str) -> None:
    before = _value(_scrape(server), "tkr_num_preemptions_total", model)
    # Two completions of 150 tokens need about 10 blocks each; the pool has 12.
    answer = _complete(server, model, prompt="Once", max_tokens=150, n=2, ignore_eos=True)
    assert [choice["finish_reason"] for choice in answer["choices"]] == ["length", "length"]
    assert _value(_scrape(server), "tkr_num_preemptions_total", model) > before

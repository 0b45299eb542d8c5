"""Metrics: own registry, every series named in the exposition, bounded labels, engine gauges."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tkr_embed.engine.outputs import EngineStats
from tkr_embed.metrics import MAX_ROUTE_LABELS, RequestObservation, ServerMetrics


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _stats(**totals) -> EngineStats:
    base = dict(
        running=3,
        waiting=2,
        kv_blocks_total=100,
        kv_blocks_used=25,
        kv_blocks_free=75,
        prefix_cache_queries=0,
        prefix_cache_hits=0,
        prompt_tokens_prefilled=0,
        tokens_decoded=0,
        requests_finished=0,
        preemptions=0,
    )
    return EngineStats(**{**base, **totals})


MODEL = (("model_name", "gpt-oss-test"),)


def test_exposition_names_every_series_with_values() -> None:
    metrics = ServerMetrics()
    metrics.bind_model("gpt-oss-test")
    metrics.observe_engine_request(
        RequestObservation(
            prompt_tokens=12,
            generation_tokens=30,
            max_generation_tokens=30,
            queue_s=0.003,
            time_to_first_token_s=0.05,
            prefill_s=0.047,
            decode_s=1.15,
            inference_s=1.197,
            e2e_s=1.2,
            token_gaps=(0.02,),
        )
    )
    metrics.observe_tokens(prompt=12, generated=30, reasoning=7)
    metrics.response_cache_hits.inc()
    metrics.rate_limit_rejections.inc(2)
    metrics.observe_request("/v1/chat/completions", 200)
    metrics.observe_request("/v1/chat/completions", 429)
    metrics.update_engine(_stats(steps=4, step_phase_seconds={"schedule": 0.25, "wait": 2.0}))
    # the engine's totals grew: the counters advance by the difference
    metrics.update_engine(
        _stats(
            prefix_cache_queries=40,
            prefix_cache_hits=32,
            preemptions=1,
            steps=10,
            step_phase_seconds={"schedule": 0.5, "wait": 5.0},
            finish_reasons={"stop": 2, "length": 1},
        )
    )
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples = _samples(body)
    assert samples[("tkr_time_to_first_token_seconds_count", MODEL)] == 1
    assert samples[("tkr_inter_token_latency_seconds_count", MODEL)] == 1
    assert samples[("tkr_time_per_output_token_seconds_sum", MODEL)] == 0.02
    assert samples[("tkr_e2e_request_latency_seconds_sum", MODEL)] == 1.2
    assert samples[("tkr_request_queue_time_seconds_count", MODEL)] == 1
    assert samples[("tkr_request_prefill_time_seconds_sum", MODEL)] == 0.047
    assert samples[("tkr_request_decode_time_seconds_sum", MODEL)] == 1.15
    assert samples[("tkr_request_inference_time_seconds_sum", MODEL)] == 1.197
    assert samples[("tkr_request_prompt_tokens_sum", MODEL)] == 12
    assert samples[("tkr_request_generation_tokens_sum", MODEL)] == 30
    assert samples[("tkr_request_generation_tokens_bucket", (("le", "20.0"), *MODEL))] == 0
    assert samples[("tkr_request_generation_tokens_bucket", (("le", "50.0"), *MODEL))] == 1
    assert samples[("tkr_request_max_num_generation_tokens_count", MODEL)] == 1
    assert samples[("tkr_num_requests_running", MODEL)] == 3
    assert samples[("tkr_num_requests_waiting", MODEL)] == 2
    assert samples[("tkr_kv_cache_usage_perc", MODEL)] == 0.25
    assert samples[("tkr_gpu_cache_usage_perc", MODEL)] == 0.25
    assert samples[("tkr_prompt_tokens_total", MODEL)] == 12
    assert samples[("tkr_generation_tokens_total", MODEL)] == 30
    assert samples[("tkr_reasoning_tokens_total", MODEL)] == 7
    assert samples[("tkr_prefix_cache_queries_total", MODEL)] == 40
    assert samples[("tkr_prefix_cache_hits_total", MODEL)] == 32
    assert samples[("tkr_num_preemptions_total", MODEL)] == 1
    assert samples[("tkr_request_success_total", (("finished_reason", "stop"), *MODEL))] == 2
    assert samples[("tkr_request_success_total", (("finished_reason", "length"), *MODEL))] == 1
    assert samples[("tkr_request_success_total", (("finished_reason", "abort"), *MODEL))] == 0
    assert samples[("tkr_response_cache_hits_total", ())] == 1
    assert samples[("tkr_rate_limit_rejections_total", ())] == 2
    assert samples[("tkr_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))] == 1
    assert samples[("tkr_requests_total", (("route", "/v1/chat/completions"), ("status", "429")))] == 1
    assert samples[("tkr_engine_steps_total", MODEL)] == 10
    assert samples[("tkr_engine_step_phase_seconds_total", (*MODEL, ("phase", "schedule")))] == 0.5
    assert samples[("tkr_engine_step_phase_seconds_total", (*MODEL, ("phase", "wait")))] == 5.0
    # No per-key (or any unbounded) label: the model, route, status, the engine phase, the finish reason and
    # histogram bucket bounds.
    labels = {label for _, labels in samples for label, _ in labels}
    assert labels == {"model_name", "route", "status", "phase", "finished_reason", "le"}


def test_a_restarted_engine_adds_its_totals_and_no_counter_goes_back() -> None:
    metrics = ServerMetrics()
    metrics.bind_model("gpt-oss-test")
    first = dict(prefix_cache_queries=100, prefix_cache_hits=64, preemptions=3, steps=50)
    metrics.update_engine(_stats(**first, finish_reasons={"stop": 5, "abort": 1}, engine_id="first"))
    # The supervisor restarted the engine: the new one counts from zero, a little past the old totals by now.
    later = dict(prefix_cache_queries=120, prefix_cache_hits=8, preemptions=1, steps=60)
    metrics.update_engine(_stats(**later, finish_reasons={"stop": 7}, engine_id="second"))
    samples = _samples(metrics.render()[0])
    assert samples[("tkr_prefix_cache_queries_total", MODEL)] == 220
    assert samples[("tkr_prefix_cache_hits_total", MODEL)] == 72
    assert samples[("tkr_num_preemptions_total", MODEL)] == 4
    assert samples[("tkr_engine_steps_total", MODEL)] == 110
    assert samples[("tkr_request_success_total", (("finished_reason", "stop"), *MODEL))] == 12
    assert samples[("tkr_request_success_total", (("finished_reason", "abort"), *MODEL))] == 1
    # The same engine scraped again adds nothing.
    metrics.update_engine(_stats(**later, finish_reasons={"stop": 7}, engine_id="second"))
    assert _samples(metrics.render()[0])[("tkr_engine_steps_total", MODEL)] == 110


def test_every_model_series_is_exported_at_zero_once_the_model_is_bound() -> None:
    metrics = ServerMetrics()
    assert ("tkr_num_requests_running", MODEL) not in _samples(metrics.render()[0])
    metrics.bind_model("gpt-oss-test")
    samples = _samples(metrics.render()[0])
    assert samples[("tkr_request_prompt_tokens_count", MODEL)] == 0
    assert samples[("tkr_num_preemptions_total", MODEL)] == 0
    for reason in ("stop", "length", "abort"):
        assert samples[("tkr_request_success_total", (("finished_reason", reason), *MODEL))] == 0


def test_own_registry_so_two_apps_do_not_clash() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    first.observe_tokens(prompt=5, generated=0)
    second.bind_model("other")
    assert _samples(second.render()[0])[("tkr_prompt_tokens_total", (("model_name", "other"),))] == 0
    assert REGISTRY.get_sample_value("tkr_prompt_tokens_total") is None


def test_route_labels_are_bounded() -> None:
    metrics = ServerMetrics()
    for index in range(MAX_ROUTE_LABELS + 20):
        metrics.observe_request(f"/random/{index}", 404)
    routes = {labels[0][1] for name, labels in _samples(metrics.render()[0]) if name == "tkr_requests_total"}
    assert len(routes) == MAX_ROUTE_LABELS + 1 and "other" in routes


def test_docs_metrics_lists_exactly_the_exported_series_under_vllm_names() -> None:
    """docs/METRICS.md names every series /metrics exports and no other, and each vLLM name it gives is ours with
    `tkr_` replaced by `vllm:` (what its sed line relies on)."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "METRICS.md").read_text()
    rows = re.findall(r"^\| `(tkr_[a-z0-9_]+)`[^|]*\| (?:`(vllm:[a-z0-9_]+)` \| )?", docs, re.MULTILINE)
    documented = {ours for ours, _ in rows}
    metrics = ServerMetrics()
    exported = {family.name + ("_total" if family.type == "counter" else "") for family in metrics.registry.collect()}
    assert documented == exported
    vllm_names = {ours: theirs for ours, theirs in rows if theirs}
    assert len(vllm_names) >= 20
    assert all(theirs.replace("vllm:", "tkr_") == ours for ours, theirs in vllm_names.items()), vllm_names

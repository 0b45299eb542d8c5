"""Metrics: own registry, every series named in the exposition, bounded labels, engine gauges."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tkr_embed.engine.outputs import EngineStats
from tkr_embed.metrics import MAX_ROUTE_LABELS, ServerMetrics


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_exposition_names_every_series_with_values() -> None:
    metrics = ServerMetrics()
    metrics.time_to_first_token.observe(0.05)
    metrics.inter_token_latency.observe(0.02)
    metrics.e2e_latency.observe(1.2)
    metrics.queue_time.observe(0.003)
    metrics.observe_tokens(prompt=12, generated=30, reasoning=7)
    metrics.response_cache_hits.inc()
    metrics.rate_limit_rejections.inc(2)
    metrics.observe_request("/v1/chat/completions", 200)
    metrics.observe_request("/v1/chat/completions", 429)
    metrics.update_engine(
        EngineStats(
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
            steps=4,
            step_phase_seconds={"schedule": 0.25, "wait": 2.0},
        )
    )
    metrics.update_engine(  # the engine's totals grew: the counters advance by the difference
        EngineStats(
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
            steps=10,
            step_phase_seconds={"schedule": 0.5, "wait": 5.0},
        )
    )
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples = _samples(body)
    assert samples[("tkr_time_to_first_token_seconds_count", ())] == 1
    assert samples[("tkr_inter_token_latency_seconds_count", ())] == 1
    assert samples[("tkr_e2e_request_latency_seconds_sum", ())] == 1.2
    assert samples[("tkr_request_queue_time_seconds_count", ())] == 1
    assert samples[("tkr_num_requests_running", ())] == 3
    assert samples[("tkr_num_requests_waiting", ())] == 2
    assert samples[("tkr_kv_cache_usage_ratio", ())] == 0.25
    assert samples[("tkr_prompt_tokens_total", ())] == 12
    assert samples[("tkr_generation_tokens_total", ())] == 30
    assert samples[("tkr_reasoning_tokens_total", ())] == 7
    assert samples[("tkr_response_cache_hits_total", ())] == 1
    assert samples[("tkr_rate_limit_rejections_total", ())] == 2
    assert samples[("tkr_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))] == 1
    assert samples[("tkr_requests_total", (("route", "/v1/chat/completions"), ("status", "429")))] == 1
    assert samples[("tkr_engine_steps_total", ())] == 10
    assert samples[("tkr_engine_step_phase_seconds_total", (("phase", "schedule"),))] == 0.5
    assert samples[("tkr_engine_step_phase_seconds_total", (("phase", "wait"),))] == 5.0
    # No per-key (or any unbounded) label: only route, status, the engine phase and histogram bucket bounds.
    assert {label for _, labels in samples for label, _ in labels} == {"route", "status", "phase", "le"}


def test_own_registry_so_two_apps_do_not_clash() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    first.observe_tokens(prompt=5, generated=0)
    assert _samples(second.render()[0])[("tkr_prompt_tokens_total", ())] == 0
    assert REGISTRY.get_sample_value("tkr_prompt_tokens_total") is None


def test_route_labels_are_bounded() -> None:
    metrics = ServerMetrics()
    for index in range(MAX_ROUTE_LABELS + 20):
        metrics.observe_request(f"/random/{index}", 404)
    routes = {labels[0][1] for name, labels in _samples(metrics.render()[0]) if name == "tkr_requests_total"}
    assert len(routes) == MAX_ROUTE_LABELS + 1 and "other" in routes


def test_every_series_docs_api_lists_is_exported() -> None:
    """docs/API.md's /metrics list names real series (no drift between the docs and the exposition)."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "API.md").read_text()
    section = docs[docs.index("`/metrics` series") : docs.index("Permissions are `generate:text`")]
    names = {name for name in re.findall(r"`([a-z_]+)(?:\{[a-z,]+\})?`", section) if "_" in name}
    names |= {"response_cache_misses_total"}  # written as `response_cache_hits_total` / `_misses_total`
    names -= {"_misses_total", "tkr_"}
    metrics = ServerMetrics()
    exported = {metric.name for metric in metrics.registry.collect()}
    # prometheus_client names counters without their _total suffix
    missing = {
        name
        for name in names
        if name not in exported
        and name.removesuffix("_total") not in exported
        and f"tkr_{name}" not in exported
        and f"tkr_{name.removesuffix('_total')}" not in exported
    }
    assert len(names) >= 14 and not missing, missing

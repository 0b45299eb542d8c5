"""Prometheus metrics of the server, in a registry of their own (never the process-global one).

No label carries a key id or a raw path: label values come from small fixed sets (route templates,
status codes), so cardinality stays bounded whatever clients send.
"""

from __future__ import annotations

import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tkr_embed.engine.outputs import EngineStats

# Latency buckets (seconds): from a cached hit or one decode step up to a long generation.
_FIRST_TOKEN_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_INTER_TOKEN_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
_REQUEST_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    300.0,
)

MAX_ROUTE_LABELS = 64
OTHER_ROUTE = "other"


class ServerMetrics:
    """Every collector the server exports. One instance per app; `render()` gives the /metrics body."""

    def __init__(self, namespace: str = "tkr") -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self.time_to_first_token = self._histogram(
            "time_to_first_token_seconds", "Time from arrival to the first generated token.", _FIRST_TOKEN_BUCKETS
        )
        self.inter_token_latency = self._histogram(
            "inter_token_latency_seconds",
            "Time between two consecutive generated tokens of one request.",
            _INTER_TOKEN_BUCKETS,
        )
        self.e2e_latency = self._histogram(
            "e2e_request_latency_seconds", "Time from arrival to the last generated token.", _REQUEST_BUCKETS
        )
        self.queue_time = self._histogram(
            "request_queue_time_seconds", "Time a request waited before its first scheduled step.", _REQUEST_BUCKETS
        )
        self.requests_running = self._gauge("num_requests_running", "Requests in the running batch.")
        self.requests_waiting = self._gauge("num_requests_waiting", "Requests waiting to be scheduled.")
        self.kv_cache_usage = self._gauge("kv_cache_usage_ratio", "Fraction of KV cache blocks in use (0 to 1).")
        self.prompt_tokens = self._counter("prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = self._counter("generation_tokens", "Tokens generated.")
        self.reasoning_tokens = self._counter(
            "reasoning_tokens", "Generated tokens on the analysis (reasoning) channel."
        )
        self.response_cache_hits = self._counter("response_cache_hits", "Requests answered from the response cache.")
        self.response_cache_misses = self._counter(
            "response_cache_misses", "Cacheable requests not found in the response cache."
        )
        self.rate_limit_rejections = self._counter(
            "rate_limit_rejections", "Requests refused with 429 by a rate limit."
        )
        self.rate_limit_store_errors = self._counter(
            "rate_limit_store_errors", "Rate-limit checks that failed because the counter store (Redis) did not answer."
        )
        self.requests = self._counter(
            "requests", "HTTP requests by route template and status code.", labels=("route", "status")
        )
        self.engine_steps = self._counter("engine_steps", "Engine steps run.")
        self.engine_step_seconds = self._counter(
            "engine_step_phase_seconds",
            "Engine step time by phase: schedule, launch (input building), wait (device and sampling), "
            "postprocess, deliver (handing outputs to the HTTP layer).",
            labels=("phase",),
        )
        self._engine_seen: dict[str, float] = {}  # engine totals already added to the counters
        self._engine_lock = threading.Lock()
        self._routes: set[str] = set()
        self._routes_lock = threading.Lock()

    def _histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, documentation, namespace=self.namespace, buckets=buckets, registry=self.registry)

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, namespace=self.namespace, registry=self.registry)

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, documentation, labels, namespace=self.namespace, registry=self.registry)

    def observe_request(self, route: str, status: int) -> None:
        """Count one HTTP request. Pass the route template (e.g. "/v1/chat/completions"), never a raw path."""
        self.requests.labels(route=self._route_label(route), status=str(int(status))).inc()

    def observe_tokens(self, prompt: int, generated: int, reasoning: int = 0) -> None:
        self.prompt_tokens.inc(max(0, prompt))
        self.generation_tokens.inc(max(0, generated))
        self.reasoning_tokens.inc(max(0, reasoning))

    def update_engine(self, stats: EngineStats) -> None:
        """Copy the engine's queue and KV cache gauges and advance its step counters (call before rendering)."""
        self.requests_running.set(stats.running)
        self.requests_waiting.set(stats.waiting)
        with self._engine_lock:  # two scrapes at once must not add the same difference twice
            for name, total in (("steps", float(stats.steps)), *stats.step_phase_seconds.items()):
                delta = total - self._engine_seen.get(name, 0.0)
                if delta > 0:
                    self._engine_seen[name] = total
                    counter = self.engine_steps if name == "steps" else self.engine_step_seconds.labels(phase=name)
                    counter.inc(delta)
        self.kv_cache_usage.set(stats.kv_usage)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _route_label(self, route: str) -> str:
        # A bound on distinct routes: a bug that passes raw paths cannot grow the series without limit.
        with self._routes_lock:
            if route in self._routes:
                return route
            if len(self._routes) < MAX_ROUTE_LABELS:
                self._routes.add(route)
                return route
        return OTHER_ROUTE

"""Prometheus metrics of the server, in a registry of their own (never the process-global one).

The series that describe the model's work are named as vLLM names them, with `tkr_` where vLLM writes `vllm:`,
and carry vLLM's `model_name` label, so vLLM's Grafana dashboard reads them after one textual replace
(docs/METRICS.md holds the mapping). No label carries a key id or a raw path: label values come from small
fixed sets (the served model's name, route templates, status codes, finish reasons), so cardinality stays
bounded whatever clients send.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tkr_embed.engine.outputs import EngineStats, FinishReason

MODEL_LABEL = "model_name"

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


def _one_two_five(limit: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `limit`: token-count buckets, as vLLM lays them out."""
    bounds, scale = [], 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > limit:
                return tuple(bounds)
            bounds.append(mantissa * scale)
        scale *= 10


_TOKEN_BUCKETS = _one_two_five(131_072)  # gpt-oss's context length

MAX_ROUTE_LABELS = 64
OTHER_ROUTE = "other"
FINISH_REASONS = tuple(reason.value for reason in FinishReason)


@dataclass(frozen=True)
class RequestObservation:
    """One engine request as the HTTP layer saw it end. A duration is None when its phase was not reached
    (e.g. a request aborted before it was scheduled)."""

    prompt_tokens: int
    generation_tokens: int  # summed over its n completions
    max_generation_tokens: int  # its longest completion
    queue_s: float | None = None  # arrival -> first scheduled
    time_to_first_token_s: float | None = None  # arrival -> first token
    prefill_s: float | None = None  # first scheduled -> first token
    decode_s: float | None = None  # first token -> last token
    inference_s: float | None = None  # first scheduled -> last token
    e2e_s: float | None = None  # arrival -> last token
    token_gaps: Sequence[float] = ()  # between consecutive tokens


class ServerMetrics:
    """Every collector the server exports. One instance per app; `render()` gives the /metrics body.

    `bind_model(name)` (at start-up, once the served model's name is known) sets the `model_name` label of the
    model's series; until then it is empty."""

    def __init__(self, namespace: str = "tkr") -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = ""
        self._per_model: list[Counter | Gauge | Histogram] = []  # labelled by model_name alone
        self.time_to_first_token = self._histogram(
            "time_to_first_token_seconds", "Time from arrival to the first generated token.", _FIRST_TOKEN_BUCKETS
        )
        self.inter_token_latency = self._histogram(
            "inter_token_latency_seconds",
            "Time between two consecutive generated tokens of one request.",
            _INTER_TOKEN_BUCKETS,
        )
        self.time_per_output_token = self._histogram(
            "time_per_output_token_seconds",
            "Time between two consecutive generated tokens of one request (inter_token_latency_seconds under "
            "the name vLLM's dashboard reads).",
            _INTER_TOKEN_BUCKETS,
        )
        self.e2e_latency = self._histogram(
            "e2e_request_latency_seconds", "Time from arrival to the last generated token.", _REQUEST_BUCKETS
        )
        self.queue_time = self._histogram(
            "request_queue_time_seconds", "Time a request waited before its first scheduled step.", _REQUEST_BUCKETS
        )
        self.prefill_time = self._histogram(
            "request_prefill_time_seconds",
            "Time from a request's first scheduled step to its first token.",
            _REQUEST_BUCKETS,
        )
        self.decode_time = self._histogram(
            "request_decode_time_seconds", "Time from a request's first token to its last.", _REQUEST_BUCKETS
        )
        self.inference_time = self._histogram(
            "request_inference_time_seconds",
            "Time from a request's first scheduled step to its last token.",
            _REQUEST_BUCKETS,
        )
        self.request_prompt_tokens = self._histogram(
            "request_prompt_tokens", "Prompt tokens of each request.", _TOKEN_BUCKETS
        )
        self.request_generation_tokens = self._histogram(
            "request_generation_tokens", "Tokens generated for each request (all its completions).", _TOKEN_BUCKETS
        )
        self.request_max_generation_tokens = self._histogram(
            "request_max_num_generation_tokens",
            "Tokens generated by the longest completion of each request.",
            _TOKEN_BUCKETS,
        )
        self.requests_running = self._gauge("num_requests_running", "Requests in the running batch.")
        self.requests_waiting = self._gauge("num_requests_waiting", "Requests waiting to be scheduled.")
        self.kv_cache_usage = self._gauge("kv_cache_usage_perc", "Fraction of KV cache blocks in use (0 to 1).")
        self.gpu_cache_usage = self._gauge(
            "gpu_cache_usage_perc",
            "Fraction of KV cache blocks in use (0 to 1), whatever the device: kv_cache_usage_perc under the "
            "older name vLLM's dashboard reads.",
        )
        self.prompt_tokens = self._counter("prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = self._counter("generation_tokens", "Tokens generated.")
        self.reasoning_tokens = self._counter(
            "reasoning_tokens", "Generated tokens on the analysis (reasoning) channel."
        )
        self.prefix_cache_queries = self._counter(
            "prefix_cache_queries", "Prompt tokens looked up in the prefix cache (once per request)."
        )
        self.prefix_cache_hits = self._counter(
            "prefix_cache_hits", "Prompt tokens found in the prefix cache (not computed again)."
        )
        self.preemptions = self._counter(
            "num_preemptions", "Sequences preempted (their KV blocks freed, to be recomputed) for lack of blocks."
        )
        self.engine_steps = self._counter("engine_steps", "Engine steps run.")
        self.request_success = self._counter(
            "request_success",
            "Completions ended, by finish reason: stop (EOS, a stop token or string), length (max_tokens or the "
            "context), abort (the client left, or the server stopped it).",
            labels=(MODEL_LABEL, "finished_reason"),
        )
        self.engine_step_seconds = self._counter(
            "engine_step_phase_seconds",
            "Engine step time by phase: schedule, launch (input building), wait (device and sampling), "
            "postprocess, deliver (handing outputs to the HTTP layer).",
            labels=(MODEL_LABEL, "phase"),
        )
        self.response_cache_hits = self._counter(
            "response_cache_hits", "Requests answered from the response cache.", labels=()
        )
        self.response_cache_misses = self._counter(
            "response_cache_misses", "Cacheable requests not found in the response cache.", labels=()
        )
        self.rate_limit_rejections = self._counter(
            "rate_limit_rejections", "Requests refused with 429 by a rate limit.", labels=()
        )
        self.rate_limit_store_errors = self._counter(
            "rate_limit_store_errors",
            "Rate-limit checks that failed because the counter store (Redis) did not answer.",
            labels=(),
        )
        self.requests = self._counter(
            "requests", "HTTP requests by route template and status code.", labels=("route", "status")
        )
        self._engine_id: str | None = None  # the engine whose totals _engine_seen holds
        self._engine_seen: dict[tuple[str, ...], float] = {}  # its totals already added to the counters
        self._engine_lock = threading.Lock()
        self._routes: set[str] = set()
        self._routes_lock = threading.Lock()

    def _histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        histogram = Histogram(
            name, documentation, (MODEL_LABEL,), namespace=self.namespace, buckets=buckets, registry=self.registry
        )
        self._per_model.append(histogram)
        return histogram

    def _gauge(self, name: str, documentation: str) -> Gauge:
        gauge = Gauge(name, documentation, (MODEL_LABEL,), namespace=self.namespace, registry=self.registry)
        self._per_model.append(gauge)
        return gauge

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...] = (MODEL_LABEL,)) -> Counter:
        counter = Counter(name, documentation, labels, namespace=self.namespace, registry=self.registry)
        if labels == (MODEL_LABEL,):
            self._per_model.append(counter)
        return counter

    def bind_model(self, model_name: str) -> None:
        """Label the model's series with `model_name` (the served model's name), and export each of them at zero
        already, as a dashboard's queries expect them before the first request."""
        self.model_name = model_name
        for collector in self._per_model:
            collector.labels(model_name)
        for reason in FINISH_REASONS:
            self.request_success.labels(model_name, reason)

    def observe_request(self, route: str, status: int) -> None:
        """Count one HTTP request. Pass the route template (e.g. "/v1/chat/completions"), never a raw path."""
        self.requests.labels(route=self._route_label(route), status=str(int(status))).inc()

    def observe_tokens(self, prompt: int, generated: int, reasoning: int = 0) -> None:
        model = self.model_name
        self.prompt_tokens.labels(model).inc(max(0, prompt))
        self.generation_tokens.labels(model).inc(max(0, generated))
        self.reasoning_tokens.labels(model).inc(max(0, reasoning))

    def observe_engine_request(self, observed: RequestObservation) -> None:
        """The per-request histograms of one engine request (its tokens go to observe_tokens)."""
        model = self.model_name
        self.request_prompt_tokens.labels(model).observe(observed.prompt_tokens)
        self.request_generation_tokens.labels(model).observe(observed.generation_tokens)
        self.request_max_generation_tokens.labels(model).observe(observed.max_generation_tokens)
        for histogram, seconds in (
            (self.queue_time, observed.queue_s),
            (self.time_to_first_token, observed.time_to_first_token_s),
            (self.prefill_time, observed.prefill_s),
            (self.decode_time, observed.decode_s),
            (self.inference_time, observed.inference_s),
            (self.e2e_latency, observed.e2e_s),
        ):
            if seconds is not None:
                histogram.labels(model).observe(seconds)
        inter_token, per_output_token = self.inter_token_latency.labels(model), self.time_per_output_token.labels(model)
        for gap in observed.token_gaps:
            inter_token.observe(gap)
            per_output_token.observe(gap)

    def update_engine(self, stats: EngineStats) -> None:
        """Copy the engine's queue and KV cache gauges and advance its counters (call before rendering).

        The engine reports totals since it started. The counters advance by what the totals grew since the
        last call, and a restarted engine (a new `engine_id`, counting from zero) adds its own totals on top:
        no counter ever goes back."""
        model = self.model_name
        self.requests_running.labels(model).set(stats.running)
        self.requests_waiting.labels(model).set(stats.waiting)
        self.kv_cache_usage.labels(model).set(stats.kv_usage)
        self.gpu_cache_usage.labels(model).set(stats.kv_usage)
        totals: list[tuple[tuple[str, ...], Counter, float]] = [
            (("steps",), self.engine_steps.labels(model), stats.steps),
            (("prefix_cache_queries",), self.prefix_cache_queries.labels(model), stats.prefix_cache_queries),
            (("prefix_cache_hits",), self.prefix_cache_hits.labels(model), stats.prefix_cache_hits),
            (("preemptions",), self.preemptions.labels(model), stats.preemptions),
        ]
        for phase, seconds in stats.step_phase_seconds.items():
            totals.append((("phase", phase), self.engine_step_seconds.labels(model, phase), seconds))
        for reason, count in stats.finish_reasons.items():
            if reason in FINISH_REASONS:
                totals.append((("finish", reason), self.request_success.labels(model, reason), count))
        with self._engine_lock:  # two scrapes at once must not add the same difference twice
            if stats.engine_id != self._engine_id:
                self._engine_id = stats.engine_id
                self._engine_seen = {}
            for key, counter, total in totals:
                delta = total - self._engine_seen.get(key, 0.0)
                if delta > 0:
                    self._engine_seen[key] = total
                    counter.inc(delta)

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

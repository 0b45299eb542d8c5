"""After a request: usage per key (buffered, written in batches), engine metrics, token rate windows."""

from __future__ import annotations

import logging

from tkr_embed.security.gateway import Gateway
from tkr_embed.security.keys import KeyInfo
from tkr_embed.services.accounting import EngineRequestRecord, RequestAccount

logger = logging.getLogger("tkr_embed.gateway")


def _observe_latencies(gateway: Gateway, record: EngineRequestRecord) -> None:
    metrics = gateway.metrics
    arrival = record.arrival
    if arrival is None:
        return
    if record.timings is not None and record.timings.scheduled is not None:
        metrics.queue_time.observe(max(0.0, record.timings.scheduled - arrival))
    if record.first_token_at is not None:
        metrics.time_to_first_token.observe(max(0.0, record.first_token_at - arrival))
    for gap in record.inter_token_gaps:
        metrics.inter_token_latency.observe(gap)
    if record.finished_at is not None:
        metrics.e2e_latency.observe(max(0.0, record.finished_at - arrival))


async def observe_account(gateway: Gateway, caller: KeyInfo, account: RequestAccount, *, charge_tokens: bool) -> None:
    """Count what `account` served for `caller`. Never raises: accounting must not fail a request."""
    if account.cache_status == "miss":
        gateway.metrics.response_cache_misses.inc()
    if not account.served:
        return
    try:
        prompt, completion, reasoning = account.prompt_tokens, account.completion_tokens, account.reasoning_tokens
        gateway.usage.record(
            caller.id,
            prompt_tokens=prompt,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            cache_hit=account.cache_hit,
        )
        if account.cache_hit:
            gateway.metrics.response_cache_hits.inc()
        else:
            # Engine work only: a cache hit processed nothing.
            gateway.metrics.observe_tokens(prompt, completion, reasoning)
            for record in account.engine_requests.values():
                _observe_latencies(gateway, record)
        if charge_tokens and gateway.limiter is not None and account.charged is None:
            # Tokens per minute are charged once known; the next request sees them.
            await gateway.limiter.record_tokens(caller.id, gateway.limits_for(caller), prompt + completion)
    except Exception:
        logger.exception("usage accounting failed for key %s", caller.id)

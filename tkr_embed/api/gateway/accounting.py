"""After a request: usage per key (buffered, written in batches; budget counters), engine metrics, token rate
windows."""

from __future__ import annotations

import logging

from tkr_embed.metrics import RequestObservation
from tkr_embed.security.gateway import Gateway
from tkr_embed.security.keys import KeyInfo, utcnow
from tkr_embed.services.accounting import EngineRequestRecord, RequestAccount

logger = logging.getLogger("tkr_embed.gateway")


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def _observation(record: EngineRequestRecord) -> RequestObservation:
    arrival, first_token, finished = record.arrival, record.first_token_at, record.finished_at
    scheduled = record.timings.scheduled if record.timings is not None else None
    return RequestObservation(
        prompt_tokens=record.prompt_tokens,
        generation_tokens=record.completion_tokens,
        max_generation_tokens=record.max_completion_tokens,
        queue_s=_between(arrival, scheduled),
        time_to_first_token_s=_between(arrival, first_token),
        prefill_s=_between(scheduled, first_token),
        decode_s=_between(first_token, finished),
        inference_s=_between(scheduled, finished),
        e2e_s=_between(arrival, finished),
        token_gaps=record.inter_token_gaps,
    )


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
        if caller.budgets.is_set:
            # The shared budget counters count it once, here, as the usage rows will (budgets.py). A key without
            # budgets skips the round trip: if it gets one later, its stored rows bound its use until then.
            await gateway.budgets.add(caller.id, utcnow(), prompt, completion, reasoning)
        if account.cache_hit:
            gateway.metrics.response_cache_hits.inc()
        else:
            # Engine work only: a cache hit processed nothing.
            gateway.metrics.observe_tokens(prompt, completion, reasoning)
            for record in account.engine_requests.values():
                gateway.metrics.observe_engine_request(_observation(record))
        if charge_tokens and gateway.limiter is not None and account.charged is None:
            # Tokens per minute are charged once known; the next request sees them.
            await gateway.limiter.record_tokens(caller.id, gateway.limits_for(caller), prompt + completion)
    except Exception:
        logger.exception("usage accounting failed for key %s", caller.id)

"""The response cache as the services use it: one slot per cacheable request, in the caller's scope.

A slot exists only when the gateway opened an account with a cache and the request is deterministic
(temperature 0 or a seed). A hit returns the stored response (or the stored stream events, which
serialise to the same bytes) without touching the engine, and marks the account so that the hit is
shown in the `X-Cache` header and counted in usage. Only complete answers are stored: a stream the
client left, an error, or an engine abort store nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tkr_embed.cache.response_cache import ResponseCache, cache_key, is_cacheable
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.services.accounting import CachedUsage, RequestAccount, RequestCost, charge_request, current_account

T = TypeVar("T")
Event = TypeVar("Event")
Opened = TypeVar("Opened")


@dataclass(frozen=True)
class CachedResult(Generic[T]):
    value: T  # a response model, or the list of a stream's events
    usage: CachedUsage


class CacheSlot:
    def __init__(self, account: RequestAccount, cache: ResponseCache[Any], key: str) -> None:
        self._account = account
        self._cache = cache
        self.key = key

    def lookup(self) -> Any | None:
        """The cached value (a hit, recorded in the account) or None (a miss)."""
        entry: CachedResult[Any] | None = self._cache.get(self.key)
        if entry is None:
            self._account.cache_status = "miss"
            return None
        self._account.mark_cache_hit(entry.usage)
        return entry.value

    def store(self, value: Any) -> None:
        """Keep a complete answer with the usage the account measured for it."""
        account = self._account
        if account.engine_aborted or not account.engine_requests:
            return
        usage = CachedUsage(account.prompt_tokens, account.completion_tokens, account.reasoning_tokens)
        self._cache.put(self.key, CachedResult(value, usage))

    async def recording(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """Pass `events` through; store them once the stream ended normally."""
        collected: list[Event] = []
        async for event in events:
            collected.append(event)
            yield event
        self.store(collected)


def cache_slot(
    *,
    endpoint: str,
    model: str,
    prompt_token_ids: Sequence[int],
    params: SamplingParams,
    stream: bool,
    extra: Mapping[str, Any] | None = None,
) -> CacheSlot | None:
    """A slot for this request, or None when it is not cacheable (no cache, no caller, not deterministic).

    `extra` holds whatever else shapes the answer outside the sampling parameters (stop strings
    matched by the service, echo, include_usage...).
    """
    account = current_account()
    if account is None or account.cache is None or not is_cacheable(params):
        return None
    key = cache_key(
        scope=account.scope,
        endpoint=endpoint,
        prompt_token_ids=prompt_token_ids,
        params=params,
        stream=stream,
        model=model,
        extra=extra,
    )
    return CacheSlot(account, account.cache, key)


async def replay(events: Sequence[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def cached_or_created(slot: CacheSlot | None, create: Callable[[], Awaitable[T]], cost: RequestCost) -> T:
    """The cached answer on a hit; otherwise `cost` is charged to the caller's limits and what `create()`
    answers is returned, stored once it is complete."""
    if slot is not None and (cached := slot.lookup()) is not None:
        return cached
    await charge_request(cost)
    response = await create()
    if slot is not None:
        slot.store(response)
    return response


async def cached_or_streamed(
    slot: CacheSlot | None,
    open_stream: Callable[[], Awaitable[Opened]],
    events_of: Callable[[Opened], AsyncIterator[Event]],
    cost: RequestCost,
) -> AsyncIterator[Event]:
    """The cached events replayed on a hit; otherwise `cost` is charged and the engine request is opened now
    (so that its errors come before any byte is sent) and its events are returned, recorded for the cache."""
    if slot is not None and (cached := slot.lookup()) is not None:
        return replay(cached)
    await charge_request(cost)
    events = events_of(await open_stream())
    return slot.recording(events) if slot is not None else events

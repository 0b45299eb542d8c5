"""What one HTTP request cost: engine work, reasoning tokens, response-cache outcome.

The gateway opens a `RequestAccount` around each request (`account_scope`); the services and
`EngineStream` write into the current one, if any, through a context variable, so every API family
(the ones of tomorrow included) is accounted without knowing about keys, usage or metrics. Tasks
started while handling the request (disconnect watchers, streaming bodies) copy the context and so
write into the same account.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from tkr_embed.cache.response_cache import ResponseCache
from tkr_embed.engine.outputs import FinishReason, RequestOutput, RequestTimings

MAX_TOKEN_GAPS = 4096  # inter-token gaps kept per engine request (enough for any histogram)


@dataclass
class EngineRequestRecord:
    """One engine request as the service saw it stream by."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_completion_tokens: int = 0  # the longest of its n completions
    cached_prompt_tokens: int = 0
    finished: bool = False
    aborted: bool = False
    timings: RequestTimings | None = None
    first_token_seen_at: float | None = None  # time.monotonic() when the first new token arrived
    last_token_seen_at: float | None = None
    inter_token_gaps: list[float] = field(default_factory=list)

    def observe(self, output: RequestOutput, now: float) -> None:
        self.prompt_tokens = output.num_prompt_tokens
        self.completion_tokens = output.num_completion_tokens
        self.max_completion_tokens = max((len(o.token_ids) for o in output.outputs), default=0)
        self.cached_prompt_tokens = output.num_cached_prompt_tokens
        self.timings = output.timings
        self.finished = output.finished
        if any(o.finish_reason == FinishReason.ABORT for o in output.outputs):
            self.aborted = True
        if any(o.new_token_ids for o in output.outputs):
            if self.last_token_seen_at is None:
                self.first_token_seen_at = now
            elif len(self.inter_token_gaps) < MAX_TOKEN_GAPS:
                self.inter_token_gaps.append(now - self.last_token_seen_at)
            self.last_token_seen_at = now

    @property
    def arrival(self) -> float | None:
        return self.timings.arrival if self.timings is not None else None

    @property
    def first_token_at(self) -> float | None:
        if self.timings is not None and self.timings.first_token is not None:
            return self.timings.first_token
        return self.first_token_seen_at

    @property
    def finished_at(self) -> float | None:
        if self.timings is not None and self.timings.finished is not None:
            return self.timings.finished
        return self.last_token_seen_at if self.finished else None


@dataclass(frozen=True)
class RequestCost:
    """What a prepared request may use, known before it reaches the engine: the engine sequences it
    starts (prompts x n) and the tokens it may process (its prompt tokens and max_tokens, per sequence)."""

    sequences: int
    prompt_tokens: int  # summed over the sequences (a prompt run with n=2 counts twice)
    max_new_tokens: int  # summed over the sequences

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_new_tokens


@dataclass(frozen=True)
class CachedUsage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


@dataclass
class RequestAccount:
    """Accounting of one HTTP request. `scope` partitions the response cache (the caller's key id)."""

    scope: str
    cache: ResponseCache[Any] | None = None
    engine_requests: dict[str, EngineRequestRecord] = field(default_factory=dict)
    reasoning_tokens_noted: int = 0
    cache_status: str | None = None  # None: not cacheable; "hit" or "miss"
    cached_usage: CachedUsage | None = None  # the usage a cache hit replayed
    # Set by the gateway: charges a prepared request's cost to the caller's rate limits before the engine
    # starts it, raising RateLimitedError (429) when refused. None: nothing to charge (no limits).
    charge: Callable[[RequestCost], Awaitable[None]] | None = None
    charged: RequestCost | None = None  # what `charge` accepted (its tokens are not charged again afterwards)
    # Set by the gateway from the caller's reasoning policy: the analysis channel ends after this many tokens.
    max_reasoning_tokens: int | None = None

    def observe(self, output: RequestOutput) -> None:
        record = self.engine_requests.setdefault(output.request_id, EngineRequestRecord())
        record.observe(output, time.monotonic())

    def note_reasoning_tokens(self, count: int) -> None:
        """The services know the reasoning (analysis channel) token count once decoding is done."""
        self.reasoning_tokens_noted = max(0, count)

    def mark_cache_hit(self, usage: CachedUsage) -> None:
        self.cache_status = "hit"
        self.cached_usage = usage

    @property
    def cache_hit(self) -> bool:
        return self.cache_status == "hit"

    @property
    def served(self) -> bool:
        """Whether the request produced an answer (from the engine or the cache): usage is counted."""
        return self.cache_hit or bool(self.engine_requests)

    @property
    def engine_aborted(self) -> bool:
        return any(record.aborted for record in self.engine_requests.values())

    @property
    def prompt_tokens(self) -> int:
        if self.cached_usage is not None:
            return self.cached_usage.prompt_tokens
        return sum(record.prompt_tokens for record in self.engine_requests.values())

    @property
    def completion_tokens(self) -> int:
        if self.cached_usage is not None:
            return self.cached_usage.completion_tokens
        return sum(record.completion_tokens for record in self.engine_requests.values())

    @property
    def reasoning_tokens(self) -> int:
        if self.cached_usage is not None:
            return self.cached_usage.reasoning_tokens
        return self.reasoning_tokens_noted


_current: ContextVar[RequestAccount | None] = ContextVar("tkr_request_account", default=None)


def current_account() -> RequestAccount | None:
    return _current.get()


@contextmanager
def account_scope(account: RequestAccount) -> Iterator[RequestAccount]:
    """Make `account` the current one for everything the request runs inside."""
    token = _current.set(account)
    try:
        yield account
    finally:
        _current.reset(token)


async def charge_request(cost: RequestCost) -> None:
    """Charge `cost` to the current caller's limits (when the gateway asks for it); raises RateLimitedError."""
    account = _current.get()
    if account is None or account.charge is None or account.charged is not None:
        return
    await account.charge(cost)
    account.charged = cost


def note_reasoning_tokens(count: int) -> None:
    account = _current.get()
    if account is not None:
        account.note_reasoning_tokens(count)


def reasoning_token_cap() -> int | None:
    """The current caller's cap on reasoning tokens per completion, if its key has one."""
    account = _current.get()
    return account.max_reasoning_tokens if account is not None else None

"""What the HTTP layer may ask of the engine: the contract `AsyncEngine` and `ProcessEngine` implement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from tkr_embed.engine.errors import EngineDeadError
from tkr_embed.engine.outputs import EngineStats, RequestOutput
from tkr_embed.engine.runner import RunnerInfo
from tkr_embed.engine.sampling_params import SamplingParams


class EngineClient(ABC):
    """An asynchronous engine serving many requests at once.

    Invariants: every stream ends with exactly one `RequestOutput` whose `finished` is True, or with
    EngineDeadError; once a request finishes or is aborted, all its KV blocks are back in the pool.

    Supervision (what the HTTP layer reads to answer /health and to apply `engine.on_failure`):
    `dead_reason` is set the moment the engine dies on its own (its process killed, its loop crashed, a step
    hung past the watchdog's limit); every open stream has then failed with EngineDeadError and new
    requests are refused with it. `restart()` brings such an engine back, or raises EngineDeadError.
    """

    @property
    def is_running(self) -> bool:
        """True while the engine serves requests: started, not shut down, not dead."""
        return True

    @property
    def dead_reason(self) -> str | None:
        """Why the engine stopped serving on its own; None while it is alive, and after an orderly shutdown."""
        return None

    async def restart(self) -> None:
        """Replace a dead engine with a new one built as the first was: open streams fail with EngineDeadError,
        then requests are served again and `dead_reason` is None. Raises EngineDeadError if this engine
        cannot be restarted (it was shut down, the new one cannot start, or it has no way to rebuild)."""
        raise EngineDeadError(f"{type(self).__name__} cannot be restarted")

    @property
    @abstractmethod
    def info(self) -> RunnerInfo:
        """The model and cache facts of the runner behind this engine."""

    @abstractmethod
    async def start(self) -> None:
        """Start the background step loop (idempotent)."""

    @abstractmethod
    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        """Submit a request and stream its updates.

        Raises (on the first `__anext__`, before any output) InvalidRequestError when the prompt
        plus max_tokens cannot fit the context (param "messages"/"prompt" or "max_tokens"), and
        EngineOverloadedError when the waiting queue is full. If the consumer stops iterating
        (e.g. `aclose()` on client disconnect, or the task is cancelled) the request is aborted.
        """

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Abort a request if still running; its stream ends with finish_reason "abort"."""

    @abstractmethod
    def stats(self) -> EngineStats:
        """A snapshot of queue and cache statistics."""

    @abstractmethod
    async def shutdown(self, graceful: bool = True, timeout_s: float = 30.0) -> None:
        """Stop accepting requests; let in-flight ones finish (graceful) or abort them."""

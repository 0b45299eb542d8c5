"""The bounded thread pool that renders and tokenizes prompts, off the event loop.

Rendering a long conversation or tokenizing megabytes of text takes tens of milliseconds to seconds; on
the event loop that time would stall `/health` and every stream. The services hand that work here: a
fixed number of worker threads, and a bounded number of jobs waiting for one. When the queue is full the
request is refused at once with 503 and Retry-After (EngineOverloadedError), rather than queued without
bound. Long texts are encoded in short pieces (harmony/chunked_encode.py), so no worker holds the GIL for long.

The workers still hold the GIL while they run Python. The loop asks for it back after every system call, and
by default waits up to Python's switch interval (5 ms) each time: a /health answer makes a dozen such calls.
Building a pool therefore lowers the process's switch interval to GIL_SWITCH_INTERVAL_S (never raising it).
By default a pool has half the CPUs as workers (1 to 4), so the loop and the engine's pipe keep a core.

A job whose client leaves still runs to its end (a thread cannot be interrupted), but no longer than its
own bounded input allows, and it keeps its place in the bound meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from tkr_embed.engine.errors import EngineOverloadedError

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_QUEUE = 64
RETRY_AFTER_S = 1.0
GIL_SWITCH_INTERVAL_S = 0.0005


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class PromptPool:
    def __init__(self, workers: int | None = None, queue: int = DEFAULT_QUEUE) -> None:
        workers = default_workers() if workers is None else workers
        if workers < 1 or queue < 0:
            raise ValueError("a prompt pool needs at least one worker and a queue of zero or more")
        self.workers = workers
        self.queue = queue
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prompt-pool")
        self._lock = threading.Lock()
        self._jobs = 0  # running + waiting, until each job's thread is done with it
        # Start every worker now: the executor otherwise starts one inside a request's submit, which then waits
        # on the event loop for the new thread to get the GIL from the busy ones.
        started = threading.Barrier(workers + 1)
        for _ in range(workers):
            self._executor.submit(started.wait)
        started.wait()

    @property
    def jobs(self) -> int:
        return self._jobs

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on a worker (with the caller's context variables); its result or its error.

        Raises EngineOverloadedError (503, Retry-After) when every worker is busy and the queue is full."""
        with self._lock:
            if self._jobs >= self.workers + self.queue:
                raise EngineOverloadedError(
                    f"the server is busy preparing other prompts ({self._jobs} in progress); retry shortly",
                    retry_after_s=RETRY_AFTER_S,
                )
            self._jobs += 1
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(context.run, fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        # The slot is freed when the thread finishes, not when the caller stops waiting.
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._jobs -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_default: PromptPool | None = None
_default_lock = threading.Lock()


def prompt_pool() -> PromptPool:
    """The process's pool (built on first use with the defaults unless `set_prompt_pool` installed one)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PromptPool()
        return _default


def set_prompt_pool(pool: PromptPool) -> None:
    """Install the pool the settings describe (at start-up); the one it replaces is shut down."""
    global _default
    with _default_lock:
        previous, _default = _default, pool
    if previous is not None and previous is not pool:
        previous.close()

"""uvicorn with a defined shutdown.

On the first SIGTERM or SIGINT the server keeps listening while it drains: /health answers 503 `draining`, new
generation requests get 503 with Retry-After, and in-flight ones run for up to `server.graceful_shutdown_s`. The
engine then aborts whatever is left, so each of those answers ends with its documented terminal event rather
than a cut connection. Only then does uvicorn stop: it closes the listeners, lets the last responses flush, runs
the lifespan's shutdown, and the process exits 0 with no child process left. A second signal exits at once.

uvicorn's own handler stops accepting connections and cancels the running responses after its timeout, before
the lifespan (and so the engine) hears of the shutdown; and it re-raises the signal at the end, so the process
ends by the signal (status 143 for SIGTERM) however cleanly it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from types import FrameType

import uvicorn

from tkr_embed.api.lifecycle import Lifecycle, Phase

logger = logging.getLogger("tkr_embed.api")
# After the drain, how long uvicorn waits for the last responses to flush before it cancels them.
UVICORN_SHUTDOWN_TIMEOUT_S = 5
KILL_JOIN_TIMEOUT_S = 2.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, graceful_shutdown_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.graceful_shutdown_s = graceful_shutdown_s
        self._signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        lifecycle.stop = self._stop

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def _stop(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's handler: that one records the signal to re-raise it once the server has stopped.
        self._signals += 1
        if self._signals > 1:
            exit_now(sig)
        name = signal.Signals(sig).name
        if self.lifecycle.phase is not Phase.HEALTHY or self._loop is None:
            logger.warning("%s while %s: stopping (a second signal exits at once)", name, self.lifecycle.phase.value)
            self.should_exit = True
            return
        self.lifecycle.phase = Phase.DRAINING
        logger.warning(
            "%s: draining; new generation requests get 503, in-flight ones have %.0f s to finish "
            "(server.graceful_shutdown_s); a second signal exits at once",
            name,
            self.graceful_shutdown_s,
        )
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        started = time.monotonic()
        try:
            await self.lifecycle.drain(self.graceful_shutdown_s)
        except Exception:
            logger.exception("draining failed; stopping anyway")
        logger.info("drained in %.2f s; stopping", time.monotonic() - started)
        self.should_exit = True


def exit_now(sig: int) -> None:
    """End the process at once: the engine process (and any other child) killed, the resource tracker stopped;
    the status is what a shell reports for a process killed by `sig`."""
    logger.warning("%s again: exiting at once", signal.Signals(sig).name)
    stop_children()
    os._exit(128 + sig)


def stop_children() -> None:
    """Kill any child process still running, then stop multiprocessing's resource tracker, which otherwise
    outlives this process until it notices the pipe closing."""
    for child in multiprocessing.active_children():
        logger.warning("killing child process %s (pid %s)", child.name, child.pid)
        child.kill()
        child.join(KILL_JOIN_TIMEOUT_S)
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)  # the stdlib has no public call for it
    if stop is not None:
        try:
            stop()
        except Exception:  # noqa: BLE001 - exiting anyway
            logger.debug("the resource tracker could not be stopped", exc_info=True)

"""Per-request asyncio streams over an engine whose step loop runs elsewhere (a thread or a process)."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import AsyncIterator

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.errors import EngineDeadError, InvalidRequestError
from tkr_embed.engine.outputs import RequestOutput, joined_text
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.step_loop import AddRequest

_Item = RequestOutput | BaseException
logger = logging.getLogger(__name__)


class StreamingEngine(EngineClient):
    """`generate()` streams, abort on a consumer that leaves, delivery from the loop's thread.

    Subclasses say how a request reaches the step loop (`_submit`), how an abort does
    (`_request_abort`) and how a request is checked before anything is queued (`_validate`).
    """

    def __init__(self) -> None:
        self._streams: dict[str, asyncio.Queue[_Item]] = {}
        # The step loop sends deltas only (`LLMEngine.cumulative_outputs` False): request id -> its prompt, and by
        # completion index its token ids and its text's pieces so far, put back into each update (`_with_sums`).
        self._progress: dict[str, tuple[list[int], dict[int, tuple[list[int], list[str]]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = True
        self._dead_error: BaseException | None = None

    @property
    def dead_reason(self) -> str | None:
        return None if self._dead_error is None else str(self._dead_error)

    @abstractmethod
    def _validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise InvalidRequestError (naming the field) if the request can never be served."""

    @abstractmethod
    def _submit(self, request: AddRequest) -> None:
        """Queue the request for the step loop."""

    @abstractmethod
    def _request_abort(self, request_id: str) -> None:
        """Queue an abort for the step loop."""

    @abstractmethod
    async def _wait_idle(self) -> None:
        """Return once the step loop has nothing left to run (or is gone)."""

    async def _let_in_flight_finish(self, timeout_s: float) -> None:
        """A graceful shutdown's first half: in-flight requests get up to `timeout_s` to end."""
        try:
            await asyncio.wait_for(self._wait_idle(), timeout_s)
        except TimeoutError:
            logger.warning("engine shutdown: in-flight requests did not finish in %.1fs; aborting them", timeout_s)

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        self._check_accepting()
        await self.start()
        self._check_accepting()  # the engine may have died while it started
        if request_id in self._streams:
            raise InvalidRequestError(f"request id {request_id!r} is already in use", "request_id")
        self._validate(prompt_token_ids, params)  # raises before any output
        stream: asyncio.Queue[_Item] = asyncio.Queue()
        self._streams[request_id] = stream
        prompt = list(prompt_token_ids)
        self._progress[request_id] = (prompt, {})
        self._submit(AddRequest(request_id, prompt, params, time.monotonic()))
        finished = False
        held: _Item | None = None  # an item read while merging, for the next turn
        try:
            while True:
                item, held = (held, None) if held is not None else (await stream.get(), None)
                if isinstance(item, BaseException):
                    finished = True  # never added (refused by the engine) or the engine died
                    raise item
                # A consumer slower than the steps (a busy event loop) finds several updates queued: it takes
                # them as one, so the per-update cost (an SSE event, accounting) is paid once per turn.
                while not item.finished and not stream.empty():
                    following = stream.get_nowait()
                    if isinstance(following, BaseException):
                        held = following
                        break
                    item = item.followed_by(following)
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                # The consumer went away (aclose, cancellation): free everything.
                self._request_abort(request_id)

    def _check_accepting(self) -> None:
        """Raise EngineDeadError unless a new request can be served. A death is recorded (in another thread)
        before the open streams are failed (on the event loop): a stream registered after this check fails too."""
        if self._dead_error is not None:
            raise EngineDeadError(str(self._dead_error))
        if not self._accepting:
            raise EngineDeadError("the engine is not accepting requests")

    async def abort(self, request_id: str) -> None:
        self._request_abort(request_id)

    # --- from the step loop's thread ----------------------------------------------------------

    def _deliver(self, outputs: list) -> None:
        if outputs:
            self._post(self._dispatch, outputs)

    def _post(self, callback, argument) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, argument)
        except RuntimeError:  # the loop closed in between
            pass

    # --- on the event loop --------------------------------------------------------------------

    def _dispatch(self, outputs: list) -> None:
        for output in outputs:
            if isinstance(output, tuple):  # (request_id, refusal)
                request_id, item = output
                self._progress.pop(request_id, None)
            else:
                request_id, item = output.request_id, self._with_sums(output)
            stream = self._streams.get(request_id)
            if stream is not None:
                stream.put_nowait(item)

    def _with_sums(self, update: RequestOutput) -> RequestOutput:
        """A deltas-only update with the cumulative fields the in-process engine would give: the prompt, each
        completion's token ids, and its text once it has finished (joined once: CompletionOutput.text)."""
        progress = self._progress.get(update.request_id)
        if progress is None:  # the stream already ended (aborted): nobody reads it
            return update
        prompt, completions = progress
        for completion in update.outputs:
            token_ids, pieces = completions.setdefault(completion.index, ([], []))
            token_ids.extend(completion.new_token_ids)
            if completion.new_text:
                pieces.append(completion.new_text)
            completion.token_ids = token_ids
            if completion.finish_reason is not None:
                completion.text = joined_text(pieces)
        update.prompt_token_ids = prompt
        if update.finished:
            del self._progress[update.request_id]
        return update

    def _fail_all(self, error: BaseException) -> None:
        self._progress.clear()
        for stream in self._streams.values():
            stream.put_nowait(error)

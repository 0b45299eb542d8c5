"""One engine request as an async stream whose errors surface before the first byte is sent."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import anyio

from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.outputs import RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.services.accounting import current_account


class EngineStream:
    """Open with `await EngineStream.open(...)`: raises InvalidRequestError / EngineOverloadedError
    at once; afterwards iterate, and `aclose()` (always called, also on cancellation) aborts the
    request in the engine unless it finished."""

    def __init__(self, engine: EngineClient, request_id: str, updates: AsyncIterator[RequestOutput]) -> None:
        self.engine = engine
        self.request_id = request_id
        self._updates = updates
        self._first: RequestOutput | None = None
        self.finished = False

    @classmethod
    async def open(
        cls, engine: EngineClient, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> EngineStream:
        stream = cls(engine, request_id, engine.generate(request_id, prompt_token_ids, params))
        try:
            stream._first = await anext(stream._updates)
        except BaseException:
            await stream.aclose()
            raise
        stream.finished = stream._first.finished
        stream._account(stream._first)
        return stream

    @staticmethod
    def _account(update: RequestOutput) -> None:
        # Usage, cache and latency metrics of the request being served (when the gateway accounts it).
        account = current_account()
        if account is not None:
            account.observe(update)

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
                if first.finished:
                    return
            async for update in self._updates:
                self.finished = update.finished
                self._account(update)
                yield update
                if update.finished:
                    return
        finally:
            await self.aclose()

    async def __aenter__(self) -> EngineStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        # Shielded: this runs while the caller is being cancelled (client disconnect), and the
        # abort must still reach the engine.
        with anyio.CancelScope(shield=True):
            if not self.finished:
                self.finished = True
                await self.engine.abort(self.request_id)
            if isinstance(self._updates, AsyncGenerator):
                await self._updates.aclose()

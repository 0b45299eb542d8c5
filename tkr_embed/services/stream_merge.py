"""Interleave several async streams as their items arrive (one engine request per prompt)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

Item = TypeVar("Item")
_END = object()


async def merge_streams(streams: Sequence[AsyncIterator[Item]]) -> AsyncIterator[tuple[int, Item]]:
    """Yields (stream index, item) in arrival order until every stream ends. An error in any stream
    is raised here; closing the merged stream (or an error) cancels the pumps, so each source's own
    cleanup (aborting its engine request) runs."""
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Item]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put((index, exc))
            return
        await queue.put((index, _END))

    pumps = [asyncio.ensure_future(pump(index, stream)) for index, stream in enumerate(streams)]
    try:
        remaining = len(pumps)
        while remaining:
            index, item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item  # type: ignore[misc]
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

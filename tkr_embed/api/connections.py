"""What a connection may cost the server: a deadline for a request's headers, an idle keep-alive limit and a cap
on open connections (`server.header_timeout_s`, `server.keep_alive_timeout_s`, `server.max_connections`).

uvicorn closes an idle kept-alive connection (`timeout_keep_alive`) and answers 503 beyond `limit_concurrency`,
but it waits for a request's headers forever: a client sending a byte every few seconds (slowloris), or
nothing at all after connecting, holds a connection, and so a slot under the cap, for as long as it likes.
`with_header_deadline` gives uvicorn's HTTP/1.1 protocol that deadline: from the moment a connection opens, or
the first byte of a later request on a kept-alive one, the headers must be complete within the deadline, else
the client gets 408 and the connection is closed. Slow bodies and long responses are not timed here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tkr_embed.config import ServerConfig

logger = logging.getLogger("tkr_embed.api")
_TIMEOUT_BODY = b"the request headers did not arrive in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class _HeaderDeadline:
    """Mixed into a uvicorn HTTP/1.1 protocol class (h11 or httptools): both set `self.cycle` to a new
    request-response cycle once a request's headers are parsed, and `cycle.response_complete` once it is
    answered."""

    header_timeout_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        if self._deadline is None and (cycle is None or cycle.response_complete):
            self._arm()  # the first bytes of a new request
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not cycle:  # type: ignore[attr-defined]
            self._disarm()  # its headers are complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing() or transport.get_protocol() is not self:  # closed, or handed to another protocol
            return
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or cycle.response_complete:  # nothing else is being written on this connection
            transport.write(_TIMEOUT_RESPONSE)
        logger.info(
            "closed a connection from %s: no complete request headers within %.1f s (server.header_timeout_s)",
            _peer(transport),
            self.header_timeout_s,
        )
        transport.close()


def _peer(transport: asyncio.Transport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


def with_header_deadline(protocol_class: type[asyncio.Protocol], header_timeout_s: float) -> type[asyncio.Protocol]:
    return type(
        f"HeaderDeadline{protocol_class.__name__}",
        (_HeaderDeadline, protocol_class),
        {"header_timeout_s": header_timeout_s},
    )


def connection_options(server: ServerConfig) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for the connection settings."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return {
        "http": with_header_deadline(AutoHTTPProtocol, server.header_timeout_s),
        "timeout_keep_alive": server.keep_alive_timeout_s,
        "limit_concurrency": server.max_connections,
    }

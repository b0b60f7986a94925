"""Connection limits of ``convir serve``: a deadline for request headers and a cap on open
connections, enforced in uvicorn's HTTP protocol (the ASGI app only sees a request once its
headers are complete, so a client that never finishes them is invisible to it).

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and can answer 503 past
``limit_concurrency``, but only when a complete request arrives: a connection that sends
nothing, or one header byte every few seconds (slowloris), is held forever. The protocol
class made here arms a timer when a connection opens and whenever a new request starts
arriving on a kept-alive one, and disarms it when the headers are complete; at the deadline
it answers 408 and closes. A connection over the cap is answered 503 and closed at once.
Slow *bodies* are the :class:`~convir.server.security.Guard`'s (an ASGI-level 408).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("convir.server")

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 512


def _raw_response(status: int, reason: str, error: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, written below the ASGI layer."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Limits:
    """Mixed in before a uvicorn HTTP protocol class (h11 or httptools: both keep ``cycle``,
    ``connections``, ``transport`` and ``loop``); see the module docstring."""

    header_timeout: float = HEADER_TIMEOUT_S
    max_connections: int | None = MAX_CONNECTIONS
    _header_timer: asyncio.TimerHandle | None = None
    cycle: Any
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open (--max-connections)", len(self.connections) - 1)
            transport.write(
                _raw_response(
                    503,
                    "Service Unavailable",
                    "too_many_connections",
                    f"the server holds its limit of {self.max_connections} connections; retry shortly",
                )
            )
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._awaiting_headers():
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        if not self._awaiting_headers():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _awaiting_headers(self) -> bool:
        """No request in progress: the next bytes are (part of) a request's headers."""
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers():
            return
        self.transport.write(
            _raw_response(
                408,
                "Request Timeout",
                "timeout",
                f"the request headers did not arrive within {self.header_timeout:g} s",
            )
        )
        self.transport.close()


def protocol_class(
    header_timeout: float = HEADER_TIMEOUT_S, max_connections: int | None = MAX_CONNECTIONS
) -> type:
    """uvicorn's HTTP protocol (``http=`` of its Config) with these limits."""
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    attrs = {"header_timeout": float(header_timeout), "max_connections": max_connections}
    return type(f"Limited{base.__name__}", (_Limits, base), attrs)

"""uvicorn's h11 protocol plus the two guards it lacks (0.54 only times out idle keep-alive
connections): a deadline for reading each request, head and body, and a cap on open
connections. So a client that sends half a request and waits is dropped, and a crowd of
them cannot take every socket the server has. A connection closed after an answer but
before its request was fully read (the cap's 503, the app's "busy" 503, sent before the
body) closes lingering: the server sends FIN, reads and drops what the client still sends
for up to ``LINGER_S`` (or until the client closes), then closes. Closing at once with
unread bytes makes Linux send an RST, and the client may see ECONNRESET, not the answer.

``server_config`` builds the uvicorn.Config that uses it; the limits ride on the config,
which uvicorn hands (pickled) to its worker processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fastcore_cv.checks import check_int
from fastcore_cv.serve.limits import LINGER_S, MAX_CONNECTIONS, READ_TIMEOUT_S, check_seconds

logger = logging.getLogger("uvicorn.error")
_READING = (h11.IDLE, h11.SEND_BODY)  # the client's request is not fully received yet


def _too_many_connections(limit: int) -> bytes:
    body = json.dumps({"error": f"too many open connections (limit {limit})", "status": 503})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with ``config.read_timeout_s`` (a request must be received within it, from
    its first byte or from the connection opening) and ``config.max_connections``."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_timeout_s = getattr(config, "read_timeout_s", READ_TIMEOUT_S)
        self.max_connections = getattr(config, "max_connections", MAX_CONNECTIONS)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every close, uvicorn's included, goes through _close: the transport is uvicorn's
        # only handle on the socket, so this instance attribute is the one place to hook it.
        self._close_now = transport.close
        transport.close = self._close  # type: ignore[method-assign]
        if len(self.connections) > self.max_connections:
            logger.warning("refused a connection: %d open (limit)", self.max_connections)
            transport.write(_too_many_connections(self.max_connections))
            self._linger_then_close()  # the client's request is on its way, unread
            return
        self._arm()

    def _close(self) -> None:
        """Close, lingering first if the client is still sending a request we did not read."""
        if self._linger is None and self.conn.their_state is h11.SEND_BODY:
            self._linger_then_close()
        else:
            self._finish()

    def _linger_then_close(self) -> None:
        if self._linger is not None or self.transport.is_closing():
            return
        self._disarm()
        if not self.transport.can_write_eof():
            self._finish()
            return
        self.transport.write_eof()  # the answer is complete: FIN after it, then drain the rest
        self.transport.resume_reading()  # uvicorn pauses reading a body nobody consumes
        self._linger = self.loop.call_later(LINGER_S, self._finish)

    def _finish(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
        self._close_now()

    def eof_received(self) -> bool:
        # The client closed its side (after reading a refusal, or giving up): no lingering.
        self._finish()
        return True

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            return  # the rest of a request already answered: dropped
        if self._read_deadline is None and self.conn.their_state in _READING:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in _READING:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            peer = "{}:{} - ".format(*self.client) if self.client else ""
            logger.info("%sclosed: request not received within %s s", peer, self.read_timeout_s)
            self._finish()


def server_config(
    app: Any,
    *,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    **kwargs: Any,
) -> Any:
    """A uvicorn.Config for ``app`` (an ASGI app or an import string) served by
    GuardedH11Protocol with these limits; ``kwargs`` go to uvicorn.Config."""
    import uvicorn

    check_seconds(read_timeout_s, "read_timeout_s")
    check_int(max_connections, "max_connections")
    config = uvicorn.Config(app, http=GuardedH11Protocol, **kwargs)
    config.read_timeout_s, config.max_connections = float(read_timeout_s), max_connections
    return config

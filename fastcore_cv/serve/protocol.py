"""uvicorn's h11 protocol plus the two guards it lacks (0.54 only times out idle keep-alive
connections): a deadline for reading each request, head and body, and a cap on open
connections. So a client that sends half a request and waits is dropped, and a crowd of
them cannot take every socket the server has.

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
from fastcore_cv.serve.limits import MAX_CONNECTIONS, READ_TIMEOUT_S

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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("refused a connection: %d open (limit)", self.max_connections)
            transport.write(_too_many_connections(self.max_connections))
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None and self.conn.their_state in _READING:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in _READING:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
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
            self.transport.close()


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

    if not (isinstance(read_timeout_s, (int, float)) and read_timeout_s > 0):
        raise ValueError(f"read_timeout_s: expected a number > 0, got {read_timeout_s!r}")
    check_int(max_connections, "max_connections")
    config = uvicorn.Config(app, http=GuardedH11Protocol, **kwargs)
    config.read_timeout_s, config.max_connections = float(read_timeout_s), max_connections
    return config

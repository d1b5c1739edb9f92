"""Abuse a running server the way issue 9 did: an upload that is cheap to send but costly to
decode, clients that open sockets and send part of a request, and a watcher that polls
/health meanwhile (is it answering, how many predictions run, how many threads, how much
memory). ``tests/serve/test_abuse.py`` and ``bench/server_abuse.py`` both use it.
"""

from __future__ import annotations

import http.client
import io
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastcore_cv.perf.memory import rss_bytes
from fastcore_cv.perf.server import get_json

# What a slow client sends before it stalls, by kind.
SLOW_REQUESTS = {
    "silent": b"",
    "half request line": b"POST /predict HTT",
    "half headers": b"GET /health HTTP/1.1\r\nHost: x\r\n",
    "half body": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
}


def heavy_png(side: int = 7000) -> bytes:
    """A PNG of ``side`` x ``side`` 16-bit grey zeros: 95 kB to send, 49 megapixels to decode
    at the default side."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def thread_count(pid: int) -> int:
    """Threads of process ``pid`` now (0 once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def runnable_threads(pid: int) -> int:
    """Threads of process ``pid`` running or waiting for a core now (state R in
    /proc/<pid>/task/*/stat): decodes and predictions in progress, counted from outside the
    server, so an abandoned call that still runs is counted too. An idle event loop sleeps."""
    count = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended while we looked
            continue
        count += stat.rsplit(")", 1)[1].split()[0] == "R"
    return count


@dataclass
class HealthWatch:
    """Polls GET /health of the server at ``host:port`` (process ``pid``) every ``every_s``
    in a thread, from ``start()`` to ``stop()``: latencies, failures, the predictions the
    server says run, and from /proc its threads, its runnable threads and its memory."""

    host: str
    port: int
    pid: int
    every_s: float = 0.1
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    runnable: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="health-watch", daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                status, body = get_json(self.host, self.port, "/health")
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.failures.append(type(e).__name__)
            else:
                self.latencies_ms.append((time.perf_counter() - start) * 1e3)
                if status != 200:
                    self.failures.append(f"HTTP {status}")
                self.running.append(body.get("predictions", {}).get("running", 0))
            self.threads.append(thread_count(self.pid))
            self.runnable.append(runnable_threads(self.pid))
            self.rss.append(rss_bytes(self.pid))
            self._stop.wait(self.every_s)

    def start(self) -> HealthWatch:
        self._thread.start()
        return self

    def stop(self) -> HealthWatch:
        self._stop.set()
        self._thread.join()
        return self

    def __enter__(self) -> HealthWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_slow(host: str, port: int, first_bytes: bytes) -> socket.socket:
    """A connection that has sent ``first_bytes`` and then stalls."""
    sock = socket.create_connection((host, port), timeout=10)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def seconds_until_closed(socks: list[socket.socket], since: float, deadline: float) -> list:
    """For each socket, the time (s after ``since``, a ``time.monotonic()``) at which the
    server closed it, or None if it was still open at ``deadline``. Closes them all."""
    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:  # epoll: no FD_SETSIZE limit, unlike select
        for s in socks:
            selector.register(s, selectors.EVENT_READ)
        try:
            while len(closed) < len(socks) and time.monotonic() < deadline:
                for key, _ in selector.select(0.1):
                    s = key.fileobj
                    try:
                        eof = s.recv(65536) == b""  # type: ignore[union-attr]
                    except ConnectionResetError:
                        eof = True
                    if eof:
                        closed[id(s)] = time.monotonic() - since
                        selector.unregister(s)
        finally:
            for s in socks:
                s.close()
    return [closed.get(id(s)) for s in socks]

"""Refusals that come before the request is read, against the real server process on
127.0.0.1: a full prediction line refuses an upload before reading its body (so bodies held
in memory are bounded by the line), and a refused client reads its 503 instead of a TCP
reset, even while it is still sending (serve/protocol.py's lingering close)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fastcore_cv.perf.memory import rss_bytes
from fastcore_cv.perf.server import ServerProcess
from fastcore_cv.serve.limits import WAITING_PER_SLOT

pytestmark = pytest.mark.slow  # real server processes

MB = 2**20
BODY = 8 * MB  # under the server's 10 MiB upload limit
PLACES = 1 + WAITING_PER_SLOT  # --concurrency 1: one running, the rest waiting


def start_upload(server: ServerProcess, size: int, sent: int) -> socket.socket:
    """A POST /predict declaring a ``size``-byte body, of which ``sent`` bytes are sent."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {size}\r\n\r\n")  # fmt: skip
    sock.sendall(head.encode() + b"\0" * sent)
    return sock


def answer(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """What the server sent until it closed (b"" if nothing came within ``timeout_s``)."""
    sock.settimeout(timeout_s)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def wait_for(condition, deadline_s: float, what: str) -> None:
    """Poll ``condition()`` until true, failing with ``what`` after ``deadline_s``."""
    deadline, pause = time.monotonic() + deadline_s, threading.Event()
    while not condition():
        assert time.monotonic() < deadline, what
        pause.wait(0.05)


def test_a_full_line_refuses_uploads_before_reading_their_bodies(model_path):
    with ServerProcess(model_path, extra_args=("--concurrency", "1")) as server:
        # Uploads that have sent 64 kB of 8 MB and stall: each holds a place in the line.
        held = [start_upload(server, BODY, 64 * 2**10) for _ in range(PLACES)]
        wait_for(lambda: server.health()["predictions"]["waiting"] == PLACES, 30,
                 "the stalled uploads did not take their places in the line")  # fmt: skip
        # One more, also stalled after 64 kB: answered now, its body never read.
        late = start_upload(server, BODY, 64 * 2**10)
        refused = answer(late)
        late.close()
        # Many full 8 MB uploads at once: refused without their bodies held in memory.
        rss0, peak, statuses = rss_bytes(server.pid), [0], []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes(server.pid))
                done.wait(0.02)

        def upload() -> None:
            sock = start_upload(server, BODY, 0)
            try:
                sock.sendall(b"\0" * BODY)  # the server drains it while it lingers
                statuses.append(answer(sock)[:12])
            except OSError as e:
                statuses.append(type(e).__name__.encode())
            finally:
                sock.close()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        clients = [threading.Thread(target=upload, daemon=True) for _ in range(16)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        done.set()
        watcher.join()
        for s in held:
            s.close()
        log = server.log()
    assert refused.startswith(b"HTTP/1.1 503 ") and b"server busy" in refused, refused[:300]
    assert b"retry-after: 1" in refused.lower()
    assert statuses == [b"HTTP/1.1 503"] * 16, statuses
    # 16 bodies of 8 MB read into memory would be +128 MB (x2 for a form); none is read.
    assert peak[0] - rss0 < 3 * BODY, f"+{(peak[0] - rss0) / MB:.0f} MB"
    assert "Traceback" not in log


def test_a_refused_client_reads_its_503_not_a_reset(model_path):
    """Over the connection cap, clients that send a 1 MB body anyway: each reads the 503
    (closing at once with their bytes unread would make Linux answer with an RST)."""
    cap = 2
    with ServerProcess(model_path, extra_args=("--max-connections", str(cap))) as server:
        idle = [socket.create_connection((server.host, server.port)) for _ in range(cap)]
        answers = []
        for _ in range(10):
            sock = start_upload(server, MB, 0)
            try:
                sock.sendall(b"\0" * MB)
                answers.append(answer(sock)[:12])
            except OSError as e:
                answers.append(type(e).__name__.encode())
            finally:
                sock.close()
        for s in idle:
            s.close()
    assert answers == [b"HTTP/1.1 503"] * 10, answers

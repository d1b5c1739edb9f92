"""Refusals that come before the request is read, against the real server process on
127.0.0.1: stalled uploads hold only the bytes they sent (never a place in the prediction
line), the bytes of bodies held are bounded (serve/work.py BodyBudget) so a flood of uploads
is refused unread, and a refused client reads its 503 instead of a TCP reset, even while it
is still sending (serve/protocol.py's lingering close). A full line refusing before the body
is read is tested in tests/serve/test_work_pool.py and under load in test_abuse.py."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from fastcore_cv.perf.memory import rss_bytes
from fastcore_cv.perf.server import ServerProcess
from fastcore_cv.serve.limits import MAX_UPLOAD_BYTES, WAITING_PER_SLOT

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


def test_stalled_uploads_hold_bytes_not_places(model_path, chelsea_jpeg):
    """Uploads that stall after 64 kB count as the bytes they sent, not as places in the
    prediction line: twice as many as the line holds, and a normal request still gets 200
    (it got 503 when each stalled upload reserved a place before its body was read)."""
    stalled_n, sent = 2 * PLACES, 64 * 2**10
    with ServerProcess(model_path, extra_args=("--concurrency", "1")) as server:
        stalled = [start_upload(server, BODY, sent) for _ in range(stalled_n)]
        wait_for(lambda: server.health()["upload_bytes_held"] == stalled_n * sent, 30,
                 "the stalled uploads' bytes did not arrive")  # fmt: skip
        assert server.health()["predictions"]["waiting"] == 0
        normal = server.load(chelsea_jpeg.read_bytes(), clients=1, requests=3)
        for s in stalled:
            s.close()
        log = server.log()
    assert normal.statuses == {200: 3}, normal.statuses
    assert "Traceback" not in log


def test_a_full_body_budget_refuses_uploads_before_reading_them(model_path):
    """With the budget of bodies held (one 10 MiB upload per place in the line) all but
    filled by stalled uploads, 16 more 8 MB uploads at once are refused (503 + Retry-After)
    and memory grows by far less than their bodies."""
    budget = PLACES * MAX_UPLOAD_BYTES
    held_n = budget // BODY  # stalled uploads that fit, each short of its last byte
    with ServerProcess(model_path, extra_args=("--concurrency", "1")) as server:
        held = [start_upload(server, BODY, BODY - 1) for _ in range(held_n)]
        wait_for(lambda: server.health()["upload_bytes_held"] == held_n * (BODY - 1), 30,
                 "the stalled uploads' bytes did not arrive")  # fmt: skip
        # One more: refused once its bytes pass the budget, long before all 8 MB are read.
        late = start_upload(server, BODY, 0)
        with contextlib.suppress(OSError):  # the server may close while we still send
            late.sendall(b"\0" * BODY)
        refused = answer(late)
        late.close()
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
    # 16 bodies of 8 MB read into memory would be +128 MB (x2 for a form); the budget leaves
    # room for less than one.
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

"""The server under abuse, as a real process on 127.0.0.1 (``python -m fastcore_cv serve``):
decodes that outlive their timeout, slow and idle sockets, more connections than the cap.
No timing assertions beyond "within the configured timeout, plus slack": speed lives in
bench/server_abuse.py."""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from fastcore_cv.perf.abuse import (
    SLOW_REQUESTS,
    HealthWatch,
    heavy_png,
    open_slow,
    seconds_until_closed,
    thread_count,
)
from fastcore_cv.perf.server import ServerProcess

pytestmark = pytest.mark.slow  # real server processes under abusive load

MB = 2**20
RSS_TARGET = 500 * MB  # bench/server_abuse.py's target for the same load


@pytest.fixture(scope="module")
def heavy() -> bytes:
    """A 95 kB PNG that decodes to 49 megapixels of 16-bit grey (issue 9's abuse file)."""
    return heavy_png()


def _wait_idle(server: ServerProcess, deadline_s: float = 60.0) -> None:
    """Wait until no prediction runs or waits (a warm-up decode may outlive its request)."""
    deadline = time.monotonic() + deadline_s
    while any(server.health()["predictions"][k] for k in ("running", "waiting")):
        assert time.monotonic() < deadline, "predictions still running"
        time.sleep(0.05)


def test_timed_out_predictions_keep_their_slot_until_they_finish(model_path, heavy):
    """6 clients posting the 49 MP file to --timeout 1 --concurrency 1: each answer is 503 at
    once (or 200 if decoding got fast), but no more than one decode ever runs, no thread
    piles up and memory stays within one decode's worth."""
    args = ("--timeout", "1", "--concurrency", "1")
    with ServerProcess(model_path, extra_args=args) as server:
        threads0 = thread_count(server.pid)  # before any prediction thread exists
        warm = server.load(heavy, clients=1, requests=1, content_type="image/png")
        assert set(warm.statuses) <= {200, 503}
        _wait_idle(server)
        rss0 = server.rss()
        with HealthWatch(server.host, server.port, server.pid, every_s=0.05) as watch:
            result = server.load(heavy, clients=6, seconds=6.0, content_type="image/png")
        peak = server.health()["predictions"]
    assert result.requests > 6 and set(result.statuses) <= {200, 503}, result.summary()
    assert sum(result.statuses.values()) == result.requests  # no broken connection
    assert peak["limit"] == 1
    # Counted from outside (/proc), not by the pool's own counters: one prediction thread
    # in all, and at most it and the event loop runnable at once. A design that frees the
    # slot of an abandoned call (anyio's to_thread with abandon_on_cancel) starts a new
    # thread beside each call still running.
    assert max(watch.threads) - threads0 <= 1, (threads0, max(watch.threads))
    assert max(watch.runnable) <= 2, max(watch.runnable)
    # One 49 MP decode at a time (vision/decode.py bounds it to ~200 MB): at most two
    # decodes' worth (one finishing, the next starting) plus noise, the bench's 500 MB target.
    assert max(watch.rss) - rss0 < RSS_TARGET, f"+{(max(watch.rss) - rss0) / MB:.0f} MB"
    assert watch.failures == [] and len(watch.latencies_ms) > 0  # /health answered throughout


def test_slow_and_idle_sockets_are_dropped_and_others_still_answered(model_path):
    read_timeout = 2.0
    with ServerProcess(model_path, extra_args=("--read-timeout", str(read_timeout))) as server:
        opened = time.monotonic()
        slow = [open_slow(server.host, server.port, sent) for sent in SLOW_REQUESTS.values()
                for _ in range(6)]  # fmt: skip
        assert server.health()["status"] == "ok"  # a normal client is answered meanwhile
        closed = seconds_until_closed(slow, opened, opened + read_timeout + 10.0)
        log = server.log()
    assert None not in closed, f"{closed.count(None)} of {len(slow)} sockets still open"
    assert min(closed) >= read_timeout * 0.9  # dropped by the timeout, not at once
    assert "Traceback" not in log


def test_connections_over_the_cap_are_refused_then_accepted_again(model_path):
    cap = 4
    with ServerProcess(model_path, extra_args=("--max-connections", str(cap))) as server:
        idle = [open_slow(server.host, server.port, b"") for _ in range(cap)]
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/health")
        response = conn.getresponse()
        refused = response.status, response.read()
        conn.close()
        for s in idle:
            s.close()
        # Accepted again once the server has seen them close: until then a new connection
        # is refused (503) and may also be reset, so retry on either, with a deadline.
        deadline, status, pause = time.monotonic() + 10, None, threading.Event()
        while status != 200:
            assert time.monotonic() < deadline, f"still refused after 10 s: {status}"
            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            try:
                conn.request("GET", "/health")
                status = conn.getresponse().status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
            finally:
                conn.close()
            if status != 200:
                pause.wait(0.05)
    assert refused[0] == 503 and b"too many open connections (limit 4)" in refused[1]
    assert status == 200

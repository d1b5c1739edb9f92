"""The load generator against the real server process (`python -m fastcore_cv serve`): counts
that add up, statuses, error kinds, memory samples, and no process left behind. No timing
assertions: speed is measured in bench/server_load.py."""

from __future__ import annotations

import pytest

from fastcore_cv.perf.load import run_load
from fastcore_cv.perf.memory import process_state, process_tree
from fastcore_cv.perf.server import ServerProcess, free_port

pytestmark = pytest.mark.slow  # real server processes under load


def gone(pid: int) -> bool:
    """No such process, or a zombie: it has exited (an orphan's zombie stays until init reaps
    it, which a container's init may never do)."""
    found = process_state(pid)
    return found is None or found[0] in ("Z", "X")


def test_load_counts_statuses_latencies_and_memory(model_path, chelsea_jpeg):
    photo = chelsea_jpeg.read_bytes()
    with ServerProcess(model_path) as server:
        pid = server.pid
        result = server.load(photo, clients=4, requests=300)
        form = server.load(photo, clients=2, seconds=0.5, multipart=True)
        bad = server.load(b"not an image", clients=2, requests=20)
        after = server.load(photo, clients=1, requests=5)
    assert result.errors == {} and result.statuses == {200: 300}
    assert result.requests == 300 == len(result.latencies_ms) and result.clients == 4
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.seconds > 0 and result.requests_per_s > 0
    assert len(result.rss) >= 2 and [result.rss[0].requests, result.rss[-1].requests] == [0, 300]
    assert all(s.rss_bytes > 10 * 2**20 for s in result.rss)  # a Python process + onnxruntime
    assert result.rss_after(300) == result.rss[-1] and result.rss_after(301) is None
    assert result.rss_growth_bytes == result.rss[-1].rss_bytes - result.rss[0].rss_bytes
    assert "300 requests" in result.summary() and "errors none" in result.summary()
    # multipart, stopped by time rather than by a count
    assert form.errors == {} and form.requests > 0 and form.statuses == {200: form.requests}
    # a bad image body is an error kind (the server's 415), not a crash of either side
    assert bad.statuses == {415: 20} and bad.errors == {"HTTP 415": 20}
    assert bad.error_count == 20 and bad.requests == 20
    assert after.statuses == {200: 5}
    assert server.proc.returncode is not None and gone(pid)


def test_two_workers_are_measured_and_stopped_together(model_path, chelsea_jpeg):
    server = ServerProcess(model_path, workers=2)
    with server:
        tree = process_tree(server.pid)
        result = server.load(chelsea_jpeg.read_bytes(), clients=2, requests=20)
    assert len(tree) >= 3  # uvicorn's supervisor and its two workers
    assert result.statuses == {200: 20} and result.rss[0].rss_bytes > 3 * 10 * 2**20
    assert all(gone(pid) for pid in tree)


def test_a_server_that_cannot_start_says_why_and_is_gone(tmp_path):
    server = ServerProcess(tmp_path / "missing.onnx")
    with pytest.raises(RuntimeError, match="missing.onnx does not exist"):
        server.start()
    assert server.proc.returncode is not None and gone(server.proc.pid)


def test_no_server_is_counted_as_connection_errors():
    result = run_load("127.0.0.1", free_port(), b"x", clients=2, requests=6)
    assert result.errors == {"ConnectionRefusedError": 6}
    assert result.requests == 6 and result.statuses == {} and result.rss == []
    with pytest.raises(ValueError, match="seconds, requests or both"):
        run_load("127.0.0.1", 1, b"x")

"""Load a running server: ``run_load()``, N concurrent keep-alive clients posting one image.

Why: the serving targets are throughput and tail latency under concurrent clients, zero
errors, and memory that stays flat over 10,000 requests. ``bench/server_load.py``,
``fastcore-cv bench --load-clients`` and the tests all use this module, so the figures in
bench/RESULTS.md and those a user measures on their own machine come from the same code.
Standard library + numpy only: it never imports torch.

The clients are threads in this process, each with its own keep-alive connection
(``http.client``), so on a small machine they share the cores with the server: the
figures measure the server and its load generator together.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fastcore_cv.checks import check_int
from fastcore_cv.perf.memory import rss_bytes
from fastcore_cv.serve.limits import check_seconds

HOST = "127.0.0.1"
RSS_EVERY_REQUESTS = 1000
RSS_EVERY_S = 1.0


def multipart_form(fields: dict[str, tuple[str, bytes] | str]) -> tuple[bytes, str]:
    """A multipart/form-data body: name -> (filename, bytes) for a file, or str for a text
    field: (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, content = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
        else:
            head, content = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', value.encode()
        parts.append(f"--{boundary}\r\n{head}".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def multipart_body(data: bytes, filename: str = "image.jpg") -> tuple[bytes, str]:
    """``data`` as the form field ``file`` (what the upload page sends): (body, content type)."""
    return multipart_form({"file": (filename, data)})


@dataclass(frozen=True)
class RssSample:
    """The server's resident memory after ``requests`` answered requests, ``seconds`` in."""

    requests: int
    seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class LoadResult:
    """What ``run_load`` saw. ``requests`` counts every request sent and finished, answered
    or failed; ``statuses`` the HTTP status of each answer; ``errors`` every failure by
    kind ("HTTP 415", or the exception's name for a broken connection or a timeout).
    Latencies are those of answered requests, measured by the clients."""

    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    clients: int
    statuses: dict[int, int]
    errors: dict[str, int]
    rss: list[RssSample]
    latencies_ms: np.ndarray = field(repr=False, compare=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def rss_after(self, requests: int) -> RssSample | None:
        """The first memory sample taken once ``requests`` requests were answered."""
        return next((s for s in self.rss if s.requests >= requests), None)

    @property
    def rss_growth_bytes(self) -> int | None:
        """Memory at the end minus at the start (None without samples)."""
        return self.rss[-1].rss_bytes - self.rss[0].rss_bytes if self.rss else None

    def summary(self) -> str:
        """One line: rate, tail latency, errors, memory."""
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        text = (
            f"{self.requests} requests in {self.seconds:.1f} s from {self.clients} clients: "
            f"{self.requests_per_s:.1f} req/s, p50 {self.p50_ms:.1f} ms, p99 "
            f"{self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms, errors {errors}"
        )
        if self.rss:
            start, end = self.rss[0].rss_bytes / 2**20, self.rss[-1].rss_bytes / 2**20
            text += f"; server RSS {start:.1f} -> {end:.1f} MB ({end - start:+.1f} MB)"
        return text


class _Tickets:
    """Shared by the client threads: tickets handed out, and requests finished."""

    def __init__(self, max_requests: int | None, deadline: float) -> None:
        self.lock = threading.Lock()
        self.max_requests, self.deadline = max_requests, deadline
        self.issued = self.done = 0

    def ticket(self) -> bool:
        with self.lock:
            if self.max_requests is not None and self.issued >= self.max_requests:
                return False
            if time.perf_counter() >= self.deadline:
                return False
            self.issued += 1
            return True

    def finished(self) -> None:
        with self.lock:
            self.done += 1


@dataclass
class _ClientLog:
    """What one client thread saw (seconds, statuses, failed requests by kind)."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ended: float = 0.0
    crash: Exception | None = None  # a bug in the client, not a failed request


def _client(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    tickets: _Tickets,
    log: _ClientLog,
) -> None:
    """One client: POST over one keep-alive connection until ``tickets`` says stop."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        while tickets.ticket():
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as e:
                log.failures.append(type(e).__name__)
                conn.close()  # the next request reconnects
            else:
                log.latencies.append(time.perf_counter() - start)
                log.statuses.append(response.status)
            tickets.finished()
    except Exception as e:  # run_load re-raises it: a broken client must not look like a result
        log.crash = e
    finally:
        conn.close()
        log.ended = time.perf_counter()


def run_load(
    host: str,
    port: int,
    body: bytes,
    *,
    clients: int = 8,
    seconds: float | None = None,
    requests: int | None = None,
    multipart: bool = False,
    path: str = "/predict",
    content_type: str = "image/jpeg",
    rss_pid: int | None = None,
    rss_every_requests: int = RSS_EVERY_REQUESTS,
    rss_every_s: float = RSS_EVERY_S,
    timeout_s: float = 30.0,
) -> LoadResult:
    """POST ``body`` (an image) to ``http://host:port/path`` from ``clients`` threads at once,
    for ``seconds`` or until ``requests`` requests in all (whichever comes first).

    ``multipart``: send it as the form field ``file`` (as the upload page does) instead of
    the raw body. ``rss_pid``: the server's process; its tree's memory is sampled at the
    start, every ``rss_every_requests`` requests or ``rss_every_s`` seconds, and at the end.
    Warm the server up with a first, short run: the first requests are slower."""
    if seconds is None and requests is None:
        raise ValueError("run_load: give seconds, requests or both")
    check_int(clients, "clients")
    check_int(rss_every_requests, "rss_every_requests")
    if requests is not None:
        check_int(requests, "requests")
    for name, value in (("seconds", seconds), ("rss_every_s", rss_every_s),
                        ("timeout_s", timeout_s)):  # fmt: skip
        if value is not None:
            check_seconds(value, name)
    if multipart:
        body, content_type = multipart_body(body)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    samples: list[RssSample] = []
    start = time.perf_counter()
    tickets = _Tickets(requests, start + seconds if seconds is not None else float("inf"))

    def sample() -> None:
        if rss_pid is not None:
            with tickets.lock:
                done = tickets.done
            samples.append(RssSample(done, time.perf_counter() - start, rss_bytes(rss_pid)))

    sample()
    logs = [_ClientLog() for _ in range(clients)]
    threads = [
        threading.Thread(
            target=_client,
            args=(host, port, path, body, headers, timeout_s, tickets, log),
            name=f"loadgen-client-{i}",
            daemon=True,
        )
        for i, log in enumerate(logs)
    ]
    for t in threads:
        t.start()
    next_mark, last = rss_every_requests, time.perf_counter()
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        if tickets.done >= next_mark or time.perf_counter() - last >= rss_every_s:
            sample()
            next_mark = (tickets.done // rss_every_requests + 1) * rss_every_requests
            last = time.perf_counter()
    sample()
    crash = next((log.crash for log in logs if log.crash is not None), None)
    if crash is not None:
        raise RuntimeError(f"run_load: a client thread failed: {crash!r}") from crash
    elapsed = max(log.ended for log in logs) - start
    latencies = np.array([x for log in logs for x in log.latencies]) * 1e3
    statuses = Counter(s for log in logs for s in log.statuses)
    errors = Counter(f for log in logs for f in log.failures)
    errors.update({f"HTTP {s}": n for s, n in statuses.items() if s != 200})
    total = len(latencies) + sum(len(log.failures) for log in logs)

    def pct(q: float) -> float:
        return float(np.percentile(latencies, q)) if len(latencies) else float("nan")

    return LoadResult(
        requests=total,
        seconds=elapsed,
        requests_per_s=total / elapsed,
        p50_ms=pct(50),
        p99_ms=pct(99),
        max_ms=float(latencies.max()) if len(latencies) else float("nan"),
        clients=clients,
        statuses=dict(sorted(statuses.items())),
        errors=dict(sorted(errors.items())),
        rss=samples,
        latencies_ms=latencies,
    )

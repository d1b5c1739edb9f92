"""The server's settings and limits, each defined once: ``create_app``, ``run`` and
``fastcore-cv serve``'s flags all take their defaults from here. The pixel limit is decode's
own (the Predictor's default too), so a photo the server accepts is one ``predict`` accepts."""

from __future__ import annotations

from fastcore_cv.checks import check_number
from fastcore_cv.vision.decode import MAX_PIXELS

__all__ = ["DRAIN_S", "GRACEFUL_TIMEOUT_S", "HOST", "LINGER_S", "MAX_CONNECTIONS", "MAX_PIXELS",
           "MAX_UPLOAD_BYTES", "PORT",
           "READ_TIMEOUT_S", "THREADS", "TIMEOUT_S", "WAITING_PER_SLOT",
           "check_seconds"]  # fmt: skip
HOST = "127.0.0.1"  # loopback unless told otherwise
PORT = 8000
THREADS = 1  # onnxruntime threads per prediction; the slots default to cores / THREADS
MAX_UPLOAD_BYTES = 10 * 2**20  # a 12 MP phone JPEG is 3-6 MB
TIMEOUT_S = 10.0  # per prediction request, waiting for a slot included
# A request (head and body) must arrive within this many seconds of its first byte, or of
# the connection opening: a 10 MB upload needs ~350 kB/s; a client that sends half a request
# line and waits is dropped instead of holding a socket forever.
READ_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000  # open connections per worker process; one more is answered 503
WAITING_PER_SLOT = 4  # predictions that may wait for each busy slot before 503 "busy"
# A refusal sent before the request was fully read: keep reading (and dropping) the client's
# bytes this long after answering, so closing with them unread (a TCP RST) cannot wipe the
# answer before the client reads it (serve/protocol.py).
LINGER_S = 2.0
# SIGTERM (serve/balancer.py): answer /health 503 "stopping" for this long while still serving,
# so a balancer's probe notices before the socket closes (0: close it at once).
DRAIN_S = 0.0
# Then in-flight requests get this long to finish before they are cancelled: with the drain,
# within Kubernetes' default 30 s grace period (docker stop waits 10 s: pass -t 30).
GRACEFUL_TIMEOUT_S = 20.0


def check_seconds(value: object, name: str) -> float:
    """``value`` as a finite float > 0 (a timeout or an interval), else raise naming ``name``:
    bools, inf and nan are refused (an infinite timeout is no guard, and JSON cannot say it)."""
    if check_number(value, name) <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]

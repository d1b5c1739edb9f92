"""The server's limits, each defined once: ``create_app``, ``run`` and ``fastcore-cv serve``'s
flags all take their defaults from here. The pixel limit is decode's own (the Predictor's
default too), so a photo the server accepts is one ``predict`` accepts."""

from __future__ import annotations

from fastcore_cv.vision.decode import MAX_PIXELS

__all__ = ["MAX_CONNECTIONS", "MAX_PIXELS", "MAX_UPLOAD_BYTES", "READ_TIMEOUT_S", "TIMEOUT_S",
           "WAITING_PER_SLOT"]  # fmt: skip
MAX_UPLOAD_BYTES = 10 * 2**20  # a 12 MP phone JPEG is 3-6 MB
TIMEOUT_S = 10.0  # per prediction request, waiting for a slot included
# A request (head and body) must arrive within this many seconds of its first byte, or of
# the connection opening: a 10 MB upload needs ~350 kB/s; a client that sends half a request
# line and waits is dropped instead of holding a socket forever.
READ_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000  # open connections per worker process; one more is answered 503
WAITING_PER_SLOT = 4  # predictions that may wait for each busy slot before 503 "busy"

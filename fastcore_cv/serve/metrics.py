"""``/metrics`` in Prometheus text format: what the server did, per app, never global.

Each app gets its own ``CollectorRegistry`` (two apps in one process, as in the tests, count
apart). Requests are counted by route and status by an ASGI wrapper around the whole app (so
404s, 413s and 503s count too); the predict handler adds the decode and inference times the
Predictor measured, and the answers below the threshold ("not sure").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from fastcore_cv.export.predictor import Prediction

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Decode of a phone JPEG ~20-160 ms, one 224 px inference ~5-30 ms (notes/onnx-deploy.md).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """The server's counters, in a registry of its own. ``routes``: the paths counted by name;
    any other path is counted as "other" (a scanner's random URLs make no new series)."""

    def __init__(self, routes: set[str], model: dict[str, str]) -> None:
        self.routes = set(routes)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fastcore_cv_requests", "HTTP requests answered, by route and "
                                "status", ["route", "status"], registry=r)  # fmt: skip
        self.in_flight = Gauge("fastcore_cv_requests_in_flight", "HTTP requests being "
                               "answered now", registry=r)  # fmt: skip
        self.decode = Histogram("fastcore_cv_decode_seconds", "Image decode and "
                                "preprocessing time per prediction", buckets=BUCKETS,
                                registry=r)  # fmt: skip
        self.inference = Histogram("fastcore_cv_inference_seconds", "onnxruntime time "
                                   "(and softmax) per prediction", buckets=BUCKETS,
                                   registry=r)  # fmt: skip
        self.predictions = Counter("fastcore_cv_predictions", "Images answered, by whether "
                                   "the answer was accepted", ["accepted"], registry=r)  # fmt: skip
        self.not_sure = Counter("fastcore_cv_not_sure", "Images answered 'not sure' (below "
                                "the confidence threshold)", registry=r)  # fmt: skip
        self.ready = Gauge("fastcore_cv_ready", "1 once the model is loaded and warmed up",
                           registry=r)  # fmt: skip
        Info("fastcore_cv_model", "The model served", registry=r).info(model)

    def observe(self, p: Prediction) -> None:
        """One answered image: its decode and inference times, and whether it was accepted."""
        self.decode.observe(p.decode_ms / 1e3)
        self.inference.observe(p.inference_ms / 1e3)
        self.predictions.labels(accepted=str(p.accepted).lower()).inc()
        if not p.accepted:
            self.not_sure.inc()

    def text(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware (``Middleware(CountRequests, metrics=...)``): every HTTP request
    counted by route and status, and gauged while in flight."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root + "/"):  # served under a prefix (--root-path)
            path = path[len(root) :]
        route = path if path in m.routes else "other"
        status = {"code": 500}  # an app that raises before answering answers 500

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            m.in_flight.dec()
            m.requests.labels(route=route, status=str(status["code"])).inc()

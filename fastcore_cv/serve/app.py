"""The web app: an upload page and a JSON API over one ``Predictor`` (Starlette + uvicorn).

GET /          the upload page (choose or drop a photo, see the top classes and latency)
POST /predict  multipart field ``file`` or the raw image as the body -> {label, probability,
               top_k: [{label, probability}], latency_ms}
               ``?top_k=`` classes shown, ``?threshold=`` accept at this probability instead
               of the model's calibrated threshold; ``accepted`` false means "not sure"
GET /health    readiness: 503 {"status": "starting"} until the model is loaded and warmed up,
               then 200 {"status": "ok", "predictions": {running, waiting, ...}, ...}
               and 503 {"status": "stopping"} from SIGTERM on (serve/balancer.py)
GET /live      liveness: 200 {"status": "alive"} as soon as the process answers
GET /metadata  classes, preprocessing, model id, training and calibration summary, limits
GET /metrics   Prometheus text: requests, decode/inference latency, "not sure", in flight

Every error is JSON ``{"error": ..., "status": ...}`` with a 4xx/5xx code; a bad upload
never takes the server down. Prediction runs in a fixed pool of worker threads (onnxruntime
releases the GIL), one per core by default, under ``timeout_s`` (serve/work.py); requests
must arrive within ``read_timeout_s`` and connections are capped (serve/protocol.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import json
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from fastcore_cv.checks import check_int
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.serve.balancer import (
    check_drain,
    check_root_path,
    drain_on_sigterm,
    draining,
    exit_zero_after_sigterm,
)
from fastcore_cv.serve.limits import (
    DRAIN_S,
    GRACEFUL_TIMEOUT_S,
    HOST,
    MAX_CONNECTIONS,
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    PORT,
    READ_TIMEOUT_S,
    THREADS,
    TIMEOUT_S,
    WAITING_PER_SLOT,
    check_seconds,
)
from fastcore_cv.serve.metrics import CONTENT_TYPE, CountRequests, ServerMetrics
from fastcore_cv.serve.page import PAGE
from fastcore_cv.serve.protocol import server_config
from fastcore_cv.serve.work import BodyBudget, Busy, WorkPool
from fastcore_cv.threads import available_cores
from fastcore_cv.vision import decode

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "TIMEOUT_S", "create_app", "run"]
MULTIPART_SLACK = 16 * 2**10  # boundaries and part headers around the file in a form body
ENV = "FASTCORE_CV_SERVE"  # settings for uvicorn's worker processes (JSON)
# ImageError reason -> HTTP status: not an image at all is 415, too many pixels is 413.
STATUS = {decode.NOT_AN_IMAGE: 415, decode.UNSUPPORTED: 415, decode.BOMB: 413}
NO_IMAGE = "no image: send it as the multipart field 'file' or as the body"
MAX_QUERY_INT = 10**9 - 1  # nine digits: int() of a 5000-digit string is itself an error
MAX_QUERY_DIGITS = len(str(MAX_QUERY_INT))
logger = logging.getLogger("fastcore_cv.serve")
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'"
)


def query_int(request: Request, name: str, default: int, low: int = 1) -> int:
    """The query parameter ``name`` as an int in [low, MAX_QUERY_INT], else 422 naming it.
    ASCII digits only: ``str.isdigit`` also accepts "²" and "①", which ``int`` refuses."""
    text = request.query_params.get(name)
    if text is None:
        return default
    digits = text.isascii() and text.isdigit() and len(text) <= MAX_QUERY_DIGITS
    value = int(text) if digits else None
    if value is None or value < low:
        raise HTTPException(422, f"{name}: expected an int from {low} to {MAX_QUERY_INT}, "
                                 f"got {text[:40]!r}")  # fmt: skip
    return value


def query_float(request: Request, name: str, low: float = 0.0, high: float = 1.0) -> float | None:
    """The query parameter ``name`` as a finite float in [low, high] (None when absent), else
    422 naming it. Plain decimal text only: no "nan", "inf" or 5000-character numbers."""
    text = request.query_params.get(name)
    if text is None:
        return None
    plain = text.isascii() and 0 < len(text) <= 32 and set(text) <= set("0123456789.eE+-")
    try:
        value = float(text) if plain else math.nan
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise HTTPException(422, f"{name}: expected a number from {low} to {high}, "
                                 f"got {text[:40]!r}")  # fmt: skip
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status, headers=headers)


async def _read_body(
    request: Request, limit: int, slack: int, hold: Callable[[int], None]
) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit + slack``
    (``slack``: room for a form's boundaries and headers around the file); each chunk is
    counted by ``hold`` (serve/work.py BodyBudget) as it arrives, which may raise Busy."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + slack:
        raise HTTPException(413, f"upload of {int(declared):,} bytes > limit {limit:,}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + slack:
                raise HTTPException(413, f"upload larger than the limit of {limit:,} bytes")
            hold(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or dropped by the read timeout: nobody reads the answer
        raise HTTPException(408, "the request body did not arrive") from None
    return b"".join(chunks)


async def _image_bytes(request: Request, limit: int, hold: Callable[[int], None]) -> bytes:
    """The uploaded image: the multipart field ``file``, or else the raw body."""
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    body = await _read_body(request, limit, MULTIPART_SLACK if multipart else 0, hold)
    if not multipart:
        if not body:
            raise HTTPException(422, NO_IMAGE)
        return body
    sent = False

    async def replay() -> dict[str, Any]:  # hand the already-read body to the form parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=8, max_part_size=limit)
    try:
        upload = form.get("file")
        if upload is None:
            raise HTTPException(422, "missing form field 'file' (the image)")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "form field 'file' must be a file upload, not text")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise HTTPException(413, f"upload of {len(data):,} bytes > limit {limit:,}")
    if not data:  # the same answer as an empty raw body
        raise HTTPException(422, NO_IMAGE)
    return data


def create_app(
    model_path: str | os.PathLike,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    timeout_s: float = TIMEOUT_S,
    threads: int = THREADS,
    concurrency: int | None = None,
    waiting_per_slot: int = WAITING_PER_SLOT,
) -> Starlette:
    """The ASGI app for ``model_path`` (loaded once, now: a bad file fails here, not later).

    ``concurrency``: predictions running at once (default: one per core, each on
    ``threads`` onnxruntime threads), counted until their thread returns, a timed-out one
    included; up to ``waiting_per_slot`` per slot more wait, within ``timeout_s``, and
    beyond that a request is refused at once (503), before its body is read. Bodies being
    read or waiting are bounded in bytes (as many as the line can use), not in places, so
    stalled uploads lock no one out. The pool's threads end with the app's lifespan."""
    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels)):
        check_int(value, name)
    timeout_s = check_seconds(timeout_s, "timeout_s")
    check_int(threads, "threads")
    slots = max(1, available_cores() // threads) if concurrency is None else concurrency
    check_int(slots, "concurrency")
    check_int(waiting_per_slot, "waiting_per_slot", 0)
    predictor = Predictor(model_path, threads, max_pixels=max_pixels, warmup=0)
    pool = WorkPool(slots, slots * waiting_per_slot)
    bodies = BodyBudget((slots + pool.max_waiting) * max_upload_bytes)
    started = time.time()
    name = Path(model_path).name
    info = predictor.info
    routes = {"/", "/health", "/live", "/metadata", "/metrics", "/predict"}
    metrics = ServerMetrics(routes, {"model": name, "model_id": info.model_id or "",
                                     "quantization": info.quantization or "fp32",
                                     "version": info.version})  # fmt: skip
    # -> "ok" after the warm-up, "failed" if it raised; "stopping" from SIGTERM on
    state = {"status": "starting"}
    limits = {
        "max_upload_bytes": max_upload_bytes,
        "max_pixels": max_pixels,
        "timeout_s": timeout_s,
        "concurrency": slots,
    }

    async def page(request: Request) -> HTMLResponse:
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
        # The page's fetches are relative ("metadata", "predict"): under a prefix they resolve
        # against <base>, so /prefix (no slash) works as well as /prefix/.
        base = f'<base href="{html.escape(request.scope.get("root_path", ""))}/">'
        return HTMLResponse(PAGE.replace("<head>", "<head>\n" + base, 1), headers=headers)

    async def health(request: Request) -> JSONResponse:
        uptime = round(time.time() - started, 1)
        return JSONResponse({"status": state["status"], "model": name,
                             "model_id": info.model_id, "uptime_s": uptime,
                             "predictions": pool.counts(), "upload_bytes_held": bodies.held},
                            200 if state["status"] == "ok" else 503)  # fmt: skip

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive", "model": name})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({"model": name, **predictor.info.to_dict(), "limits": limits})

    async def predict(request: Request) -> JSONResponse:
        top_k = query_int(request, "top_k", 5)
        threshold = query_float(request, "threshold")
        with bodies.holding() as hold:
            try:  # a full line refuses at once, the body unread; bodies held are bounded
                pool.check_room()
                data = await _image_bytes(request, max_upload_bytes, hold)
                pool.reserve()
            except Busy as e:  # the body may be unread, so the connection cannot be reused
                headers = {"Retry-After": "1", "Connection": "close"}
                return _error(503, f"server busy: {e}", headers)
            try:
                answer = functools.partial(predictor.predict, threshold=threshold)
                p = await pool.run_reserved(answer, data, top_k, timeout_s=timeout_s)
            except decode.ImageError as e:
                reason = e.reason + (f" ({e.detail})" if e.detail else "")
                return _error(STATUS.get(e.reason, 400), f"not a usable image: {reason}")
            except TimeoutError:  # asyncio.TimeoutError too (one class from Python 3.11)
                message = f"prediction took longer than {timeout_s} s"
                return _error(503, message, {"Retry-After": "1"})
        metrics.observe(p)
        return JSONResponse(p.to_dict())

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The warm-up runs while the server already answers: /health says "starting" (503)
        # until it is done, so a load balancer sends no photo to a cold model.
        warming = asyncio.create_task(asyncio.to_thread(predictor.warm_up))
        warming.add_done_callback(_warmed)
        yield
        with contextlib.suppress(BaseException):
            await warming
        pool.shutdown(wait=True)  # the threads end with the server, a running call finished

    def not_ready() -> None:  # SIGTERM (serve/balancer.py): the balancer should look elsewhere
        state["status"] = "stopping"
        metrics.ready.set(0)

    def _warmed(task: asyncio.Task) -> None:
        if state["status"] == "stopping":
            return
        if task.cancelled() or task.exception() is not None:
            state["status"] = "failed"
            logger.error("warm-up of %s failed", name, exc_info=task.exception())
            return
        state["status"] = "ok"
        metrics.ready.set(1)

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/live", live),
            Route("/metadata", metadata),
            Route("/metrics", metrics_text),
            Route("/predict", predict, methods=["POST"]),
        ],
        middleware=[Middleware(CountRequests, metrics=metrics)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.predictor, app.state.limits, app.state.pool = predictor, limits, pool
    app.state.metrics, app.state.readiness, app.state.not_ready = metrics, state, not_ready
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory for worker processes: settings from the ``FASTCORE_CV_SERVE`` env."""
    settings = json.loads(os.environ[ENV])
    drain_s = settings.pop("drain_s", DRAIN_S)
    app = create_app(settings.pop("model_path"), **settings)
    drain_on_sigterm(app.state.not_ready, drain_s)  # a worker's main thread, under uvicorn
    return app


def bind_workers_socket(config: Any) -> socket.socket:
    """The listening socket the worker processes share, with TCP_NODELAY set.

    uvicorn.run(workers=N) leaves Nagle's algorithm on for the workers' connections, so each
    keep-alive response waits for the client's delayed ACK: +43 ms a request, 766 -> 89 req/s
    measured (uvicorn issue 3149). Connections accepted on Linux inherit the listener's flag.
    """
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run(
    model_path: str | os.PathLike,
    host: str = HOST,
    port: int = PORT,
    workers: int = 1,
    log_level: str = "info",
    read_timeout_s: float = READ_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    root_path: str = "",
    drain_s: float = DRAIN_S,
    graceful_timeout_s: float = GRACEFUL_TIMEOUT_S,
    **settings: Any,
) -> None:
    """Serve ``model_path`` with uvicorn (blocks). ``workers > 1``: that many processes,
    each with its own Predictor. Binds 127.0.0.1 unless ``host`` says otherwise.
    ``read_timeout_s`` and ``max_connections``: per connection and per process (protocol.py).
    ``root_path``: the prefix a proxy strips before forwarding (ASGI root_path); SIGTERM:
    ``drain_s`` not ready but serving, then ``graceful_timeout_s`` for in-flight requests,
    exit 0 (serve/balancer.py)."""
    import uvicorn

    guards = {"read_timeout_s": read_timeout_s, "max_connections": max_connections,
              "root_path": check_root_path(root_path), "timeout_graceful_shutdown":
              check_seconds(graceful_timeout_s, "graceful_timeout_s")}  # fmt: skip
    drain_s = check_drain(drain_s)
    if workers == 1:
        app = draining(create_app(model_path, **settings), drain_s)
        server = uvicorn.Server(
            server_config(app, factory=True, host=host, port=port, log_level=log_level, **guards)
        )
        exit_zero_after_sigterm(server)
        server.run()  # a port in use: uvicorn logs the OSError and exits 1 (SystemExit)
        return
    from uvicorn.supervisors import Multiprocess

    create_app(model_path, **settings)  # fail here, once, on a bad model or setting
    os.environ[ENV] = json.dumps({"model_path": str(Path(model_path).resolve()),
                                  "drain_s": drain_s, **settings})  # fmt: skip
    config = server_config("fastcore_cv.serve.app:app_from_env", factory=True, host=host,
                           port=port, workers=workers, log_level=log_level, **guards)  # fmt: skip
    sock = bind_workers_socket(config)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()

"""The web app: an upload page and a JSON API over one ``Predictor`` (Starlette + uvicorn).

GET /          the upload page (choose or drop a photo, see the top classes and latency)
POST /predict  multipart field ``file`` or the raw image as the body -> {label, probability,
               top_k: [{label, probability}], latency_ms}
GET /health    {"status": "ok", ...}       GET /metadata  classes, preprocessing, limits

Every error is JSON ``{"error": ..., "status": ...}`` with a 4xx/5xx code; a bad upload
never takes the server down. Prediction runs in worker threads (onnxruntime releases the
GIL), at most one per core at a time, under ``timeout_s``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from fastcore_cv.checks import check_int
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.serve.page import PAGE
from fastcore_cv.threads import available_cores
from fastcore_cv.vision import decode

MAX_UPLOAD_BYTES = 10 * 2**20  # a 12 MP phone JPEG is 3-6 MB
MAX_PIXELS = 50_000_000  # 48 MP phone photos fit; a crafted 10^10-pixel header does not
TIMEOUT_S = 10.0
MULTIPART_SLACK = 16 * 2**10  # boundaries and part headers around the file in a form body
ENV = "FASTCORE_CV_SERVE"  # settings for uvicorn's worker processes (JSON)
# ImageError reason -> HTTP status: not an image at all is 415, too many pixels is 413.
STATUS = {decode.NOT_AN_IMAGE: 415, decode.UNSUPPORTED: 415, decode.BOMB: 413}
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'"
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status, headers=headers)


async def _read_body(request: Request, limit: int, slack: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit + slack``
    (``slack``: room for a form's boundaries and headers around the file)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + slack:
        raise HTTPException(413, f"upload of {int(declared):,} bytes > limit {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + slack:
            raise HTTPException(413, f"upload larger than the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The uploaded image: the multipart field ``file``, or else the raw body."""
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    body = await _read_body(request, limit, MULTIPART_SLACK if multipart else 0)
    if not multipart:
        if not body:
            raise HTTPException(
                422, "no image: send it as the multipart field 'file' or as the body"
            )
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
    return data


def create_app(
    model_path: str | os.PathLike,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    timeout_s: float = TIMEOUT_S,
    threads: int = 1,
    concurrency: int | None = None,
) -> Starlette:
    """The ASGI app for ``model_path`` (loaded once, now: a bad file fails here, not later).

    ``concurrency``: predictions running at once (default: one per core, each on
    ``threads`` onnxruntime threads); further requests wait, within ``timeout_s``."""
    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels)):
        check_int(value, name)
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s: expected a number > 0, got {timeout_s!r}")
    predictor = Predictor(model_path, threads, max_pixels=max_pixels)
    slots = concurrency or max(1, available_cores() // threads)
    limiter = anyio.CapacityLimiter(slots)
    started = time.time()
    name = Path(model_path).name
    limits = {
        "max_upload_bytes": max_upload_bytes,
        "max_pixels": max_pixels,
        "timeout_s": timeout_s,
        "concurrency": slots,
    }

    async def page(request: Request) -> HTMLResponse:
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(PAGE, headers=headers)

    async def health(request: Request) -> JSONResponse:
        uptime = round(time.time() - started, 1)
        return JSONResponse({"status": "ok", "model": name, "uptime_s": uptime})

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({"model": name, **predictor.info.to_dict(), "limits": limits})

    async def predict(request: Request) -> JSONResponse:
        top_k = request.query_params.get("top_k", "5")
        if not top_k.isdigit() or int(top_k) < 1:
            return _error(422, f"top_k: expected an int >= 1, got {top_k!r}")
        data = await _image_bytes(request, max_upload_bytes)
        try:
            with anyio.fail_after(timeout_s):
                p = await anyio.to_thread.run_sync(
                    predictor.predict, data, int(top_k), limiter=limiter, abandon_on_cancel=True
                )
        except decode.ImageError as e:
            message = f"not a usable image: {e.reason}" + (f" ({e.detail})" if e.detail else "")
            return _error(STATUS.get(e.reason, 400), message)
        except TimeoutError:
            return _error(503, f"prediction took longer than {timeout_s} s", {"Retry-After": "1"})
        return JSONResponse(p.to_dict())

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), exc.headers)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/metadata", metadata),
            Route("/predict", predict, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.predictor, app.state.limits = predictor, limits
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory for worker processes: settings from the ``FASTCORE_CV_SERVE`` env."""
    settings = json.loads(os.environ[ENV])
    return create_app(settings.pop("model_path"), **settings)


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
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    **settings: Any,
) -> None:
    """Serve ``model_path`` with uvicorn (blocks). ``workers > 1``: that many processes,
    each with its own Predictor. Binds 127.0.0.1 unless ``host`` says otherwise."""
    import uvicorn

    if workers == 1:
        app = create_app(model_path, **settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    from uvicorn.supervisors import Multiprocess

    create_app(model_path, **settings)  # fail here, once, on a bad model or setting
    os.environ[ENV] = json.dumps({"model_path": str(Path(model_path).resolve()), **settings})
    config = uvicorn.Config("fastcore_cv.serve.app:app_from_env", factory=True, host=host,
                            port=port, workers=workers, log_level=log_level)  # fmt: skip
    sock = bind_workers_socket(config)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()

"""The cleaner's web app over one ``CleanSession`` (Starlette + uvicorn, 127.0.0.1 by default).

GET  /                the page (clean/page.py)
GET  /api/items       {"items": [{path, label, predicted, probability, score, issue,
                      duplicate_of, decision, ...}], "classes", "summary"}; optional query
                      ``issue`` and ``label`` filter the list
GET  /api/image       ?path=...: a thumbnail (PNG) of one listed file
POST /api/decisions   {"path", "action": "keep"|"delete"|"relabel", "label"} -> journalled
POST /api/apply       apply the pending decisions (moves only) -> {moved, deleted, ...}
POST /api/undo        reverse the last apply
GET  /health          {"status": "ok", "model": ..., "folder": ...}

Errors are JSON ``{"error", "status"}``: 403 a path leading out of FOLDER, 404 a path not
listed, 409 a file changed since scoring, 422 a bad body or an unknown class.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from fastcore_cv.clean.inventory import CleanError, inside
from fastcore_cv.clean.page import PAGE
from fastcore_cv.clean.session import CleanSession
from fastcore_cv.serve.limits import HOST, PORT

MAX_BODY = 64 * 2**10  # a decision is ~100 bytes
THUMB = 160  # pixels, the longer side
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'"
)
logger = logging.getLogger("fastcore_cv.clean")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status)


async def _json_body(request: Request) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise CleanError(f"body larger than {MAX_BODY} bytes", 413)
    try:
        return json.loads(body)
    except ValueError:
        raise CleanError("body: expected JSON", 422) from None


def _thumbnail(path: Any) -> bytes:
    from fastcore_cv.vision.decode import load_image

    img = load_image(path, min_side=THUMB)
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def create_app(session: CleanSession) -> Starlette:
    """The ASGI app serving ``session`` (already scored)."""

    async def page(request: Request) -> HTMLResponse:
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(PAGE, headers=headers)

    async def health(request: Request) -> JSONResponse:
        s = session.summary()
        return JSONResponse({"status": "ok", "model": s["model_name"], "folder": s["folder"]})

    async def items(request: Request) -> JSONResponse:
        listed = await run_in_threadpool(session.items)
        for key in ("issue", "label"):
            want = request.query_params.get(key)
            if want is not None:
                listed = [i for i in listed if (i[key] or "") == want]
        return JSONResponse(
            {"items": listed, "classes": session.classes, "summary": session.summary()}
        )

    async def image(request: Request) -> Response:
        rel = request.query_params.get("path")
        path = inside(session.folder, rel)
        if rel not in session.view().items:
            raise CleanError(f"path: {rel!r} is not a listed image of this folder", 404)
        try:
            data = await run_in_threadpool(_thumbnail, path)
        except (OSError, ValueError) as e:  # ImageError is a ValueError
            raise CleanError(f"{rel}: cannot be decoded ({e})", 415) from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def decisions(request: Request) -> JSONResponse:
        body = await _json_body(request)
        return JSONResponse(await run_in_threadpool(session.decide, body))

    async def apply(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(session.apply))

    async def undo(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(session.undo))

    async def clean_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CleanError)
        return _error(exc.status, str(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/api/items", items),
            Route("/api/image", image),
            Route("/api/decisions", decisions, methods=["POST"]),
            Route("/api/apply", apply, methods=["POST"]),
            Route("/api/undo", undo, methods=["POST"]),
        ],
        exception_handlers={
            CleanError: clean_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )


def run(session: CleanSession, host: str = HOST, port: int = PORT, log_level: str = "info") -> None:
    """Serve ``session`` with uvicorn and the server's guarded protocol (blocks)."""
    import uvicorn

    from fastcore_cv.serve.protocol import server_config

    config = server_config(create_app(session), host=host, port=port, log_level=log_level)
    uvicorn.Server(config).run()

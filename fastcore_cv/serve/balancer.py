"""What a load balancer needs from the server process: a SIGTERM that drains, and a prefix.

On SIGTERM: readiness turns not-ready at once (/health 503 "stopping", ``fastcore_cv_ready``
0); the server keeps answering for ``drain_s`` (0 by default) so the balancer's probes see it
and send no new work; a second SIGTERM (or SIGINT) ends the drain early. Then uvicorn's own
graceful shutdown: the listening socket closes (new connections are refused), idle
keep-alive connections close, in-flight requests finish (within ``graceful_timeout_s``, then
they are cancelled), the app's lifespan ends, and the process exits 0.

How: uvicorn installs its signal handlers when it starts serving, then loads the app
(uvicorn/server.py: ``serve`` -> ``capture_signals`` -> ``_serve`` -> ``config.load``), so the
app factory ``draining`` returns is the one place, inside the serving process, where its
SIGTERM handler can be wrapped; uvicorn restores the previous handlers when it is done.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

from fastcore_cv.serve.limits import check_seconds

logger = logging.getLogger("uvicorn.error")
# A URL path prefix: "" or "/seg/seg", no trailing slash, nothing to escape in HTML or a URL.
ROOT_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*")


def check_root_path(value: str) -> str:
    """``value`` as an ASGI root_path ("" or e.g. "/models/cats"), else ValueError naming it."""
    if not isinstance(value, str) or not ROOT_PATH.fullmatch(value):
        raise ValueError(
            f"root_path: expected '' or a path like /models/cats (letters, digits, ._~-, "
            f"no trailing slash), got {value!r}"
        )
    return value


def check_drain(value: float) -> float:
    """``value`` as seconds >= 0 (0: stop accepting at once), else ValueError naming it."""
    return 0.0 if value == 0 else check_seconds(value, "drain_s")


def drain_on_sigterm(not_ready: Callable[[], None], drain_s: float) -> None:
    """Wrap the SIGTERM handler installed now (uvicorn's): call ``not_ready``, then hand the
    signal on after ``drain_s`` (at once when 0, or on a second SIGTERM). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (uvicorn then installs none either)
    forward = signal.getsignal(signal.SIGTERM)
    if not callable(forward):  # not serving under uvicorn's handler: nothing to drain into
        return
    timer: threading.Timer | None = None

    def on_sigterm(sig: int, frame: Any) -> None:
        nonlocal timer
        not_ready()
        if drain_s <= 0 or timer is not None:  # no drain, or asked twice: stop now
            if timer is not None:
                timer.cancel()
            forward(sig, frame)
            return
        logger.info("SIGTERM: not ready; draining for %s s before closing the socket", drain_s)
        timer = threading.Timer(drain_s, forward, (sig, None))  # sets uvicorn's should_exit
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)


def draining(app: Any, drain_s: float) -> Callable[[], Any]:
    """A uvicorn app factory (``factory=True``) serving ``app`` (from ``create_app``) that
    drains on SIGTERM (see the module docstring)."""

    def factory() -> Any:
        drain_on_sigterm(app.state.not_ready, drain_s)
        return app

    return factory


def exit_zero_after_sigterm(server: Any) -> None:
    """Install, before ``server.run()``, a SIGTERM handler that only asks ``server`` to exit.

    uvicorn re-raises the signal it caught once its graceful shutdown is done (to the handler
    that was there before it): without this the default handler kills the process and it
    exits -15 instead of 0. A SIGTERM before uvicorn's own handler is up stops it too."""

    def stop(sig: int, frame: Any) -> None:
        server.should_exit = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)

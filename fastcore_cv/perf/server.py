"""The real server in a child process: ``ServerProcess`` starts ``fastcore-cv serve`` on a free
loopback port, waits for /health, and stops it with its whole process group."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastcore_cv.perf.load import HOST, LoadResult, run_load
from fastcore_cv.perf.memory import rss_bytes, running_in_group


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get_json(host: str, port: int, path: str, timeout_s: float = 30.0) -> tuple[int, object]:
    """(status, parsed JSON body) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class ServerProcess:
    """``python -m fastcore_cv serve MODEL`` on a free 127.0.0.1 port, in its own process
    group, ready (GET /health answered) when ``start()``/``with`` returns.

    ``stop()`` (also on leaving ``with``, error or not) asks it to shut down (SIGTERM: uvicorn
    finishes and stops its workers), kills it after ``stop_timeout_s``, then kills whatever
    is left of its process group and returns once none of it runs, so no worker outlives it.
    Its output goes to a temporary file (``log()``): a pipe nobody reads would fill up with
    access-log lines and stall it.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        workers: int = 1,
        threads: int = 1,
        extra_args: tuple[str, ...] = (),
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self.model, self.workers, self.threads = Path(model), workers, threads
        self.extra_args = tuple(extra_args)
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.host, self.port = HOST, 0
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server: not started")
        return self.proc.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fastcore_cv", "serve", str(self.model),
                "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
                "--threads", str(self.threads), *self.extra_args]  # fmt: skip

    def start(self) -> ServerProcess:
        """Start the server and wait for GET /health; on any failure nothing is left
        running and the error quotes the server's last output line."""
        if self.proc is not None:
            raise RuntimeError("server: already started")
        try:
            self.port = free_port(self.host)
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"server: exited with code {code} before answering /health: {self._last_line()}"
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server: no answer on {self.url}/health within {self.startup_timeout_s} s: "
                    f"{self._last_line()}"
                )
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            status, answer = get_json(self.host, self.port, "/health", timeout_s=2)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        # The name check: answered by our server, not whoever took the port first.
        return status == 200 and isinstance(answer, dict) and answer.get("model") == self.model.name

    def log(self) -> str:
        """Everything the server printed so far."""
        if self._log is None:
            return ""
        fd = self._log.fileno()  # pread: the server writes at the shared offset; don't move it
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _last_line(self) -> str:
        lines = [line for line in self.log().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def rss(self) -> int:
        """Resident memory of the server and its workers now (bytes)."""
        return rss_bytes(self.pid)

    def load(self, body: bytes, **kwargs: Any) -> LoadResult:
        """``run_load`` against this server, sampling its memory."""
        return run_load(self.host, self.port, body, rss_pid=self.pid, **kwargs)

    def stop(self) -> int | None:
        """Shut the server down (see the class docstring); returns its exit code."""
        proc = self.proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid)
                    proc.wait(self.stop_timeout_s)
            _kill_group(proc.pid)  # workers that outlived their parent, if any
            self._wait_group_gone(proc.pid)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return proc.returncode

    def _wait_group_gone(self, pgid: int) -> None:
        """Return once no process of the group runs: SIGKILL is delivered asynchronously,
        and multiprocessing's resource tracker exits only after its parent has."""
        deadline = time.monotonic() + self.stop_timeout_s
        while left := running_in_group(pgid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"server: processes {left} still running after stop")
            _kill_group(pgid)
            time.sleep(0.01)

    def health(self) -> dict[str, Any]:
        """GET /health, parsed."""
        return get_json(self.host, self.port, "/health")[1]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid`` (the server's own: ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)

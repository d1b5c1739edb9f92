"""The server behind a load balancer (docs/deploy.md, serve/balancer.py): real server processes
(`python -m fastcore_cv serve`) on 127.0.0.1 behind a small real HTTP proxy written here
(round robin, optionally stripping a path prefix as nginx or Traefik would).

- stateless: two processes answer the same photos identically, in any order, whatever came
  before (a bad upload, another query);
- SIGTERM with an upload still streaming in: new connections are refused, the upload gets its
  200, the process exits 0; with --drain, /health turns 503 "stopping" first while photos are
  still answered; --graceful-timeout bounds a request that never finishes;
- --root-path: the page, its fetches and the API work under a prefix (HTTP and a browser).
"""

from __future__ import annotations

import http.client
import http.server
import io
import itertools
import signal
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data

from fastcore_cv.export import Predictor
from fastcore_cv.perf.server import ServerProcess, get_json

pytestmark = pytest.mark.slow  # real server processes
PREFIX = "/models/cats"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Balancer:
    """A real HTTP proxy on 127.0.0.1: each request goes to the next backend (round robin),
    its path stripped of ``prefix`` (paths outside it are 404 here, never forwarded); one
    request per connection. ``log``: (backend index, forwarded path) of every request."""

    def __init__(self, backends: list[tuple[str, int]], prefix: str = "") -> None:
        self.backends, self.prefix, self.log = backends, prefix, []
        turn = itertools.cycle(range(len(backends)))
        lock, outer = threading.Lock(), self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def forward(self) -> None:
                path = self.path
                if outer.prefix:
                    if path.split("?")[0] != outer.prefix and not path.startswith(
                        outer.prefix + "/"
                    ):
                        self.send_error(404, "outside the prefix")
                        return
                    path = path[len(outer.prefix) :]
                    path = path if path.startswith("/") else "/" + path
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    i = next(turn)
                    outer.log.append((i, path.split("?")[0]))
                host, port = outer.backends[i]
                conn = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_BY_HOP}  # fmt: skip
                    conn.request(self.command, path, body or None, headers)
                    r = conn.getresponse()
                    payload = r.read()
                finally:
                    conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Balancer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def jpeg(photo: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: jpeg(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut")}


def without_times(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if not k.endswith("_ms")}


def test_two_processes_answer_alike_and_no_request_depends_on_another(model_path, photos, http):
    local = Predictor(model_path, threads=1)
    answers: dict[str, list[dict]] = {name: [] for name in photos}
    with ServerProcess(model_path) as a, ServerProcess(model_path) as b:  # noqa: SIM117
        with Balancer([(a.host, a.port), (b.host, b.port)]) as lb:
            names = list(photos)
            for order in (names, names[::-1], names[1:] + names[:1]):
                for name in order:
                    status, _, answer = http.request(
                        lb.url + "/predict", photos[name], method="POST"
                    )
                    assert status == 200
                    answers[name].append(without_times(answer))
                    # things that must leave no trace on the next request, on either backend
                    assert http.request(lb.url + "/predict", b"no", method="POST")[0] == 415
                    _, _, unsure = http.request(lb.url + "/predict?threshold=1&top_k=1",
                                                photos[name], method="POST")  # fmt: skip
                    assert unsure["accepted"] is False and len(unsure["top_k"]) == 1
            used = {i for i, path in lb.log if path == "/predict"}
            ids = {get_json(s.host, s.port, "/metadata")[1]["model_id"] for s in (a, b)}
    assert used == {0, 1} and len(ids) == 1  # both answered, the same model
    for name, got in answers.items():
        assert len(got) == 3 and all(g == got[0] for g in got), name  # bit for bit
        mine = local.predict(photos[name])
        assert got[0]["label"] == mine.label and got[0]["index"] == mine.index
        # the same onnxruntime session settings in another process: float32 noise at most
        assert abs(got[0]["probability"] - mine.probability) <= 8 * np.finfo(np.float32).eps


def upload_in_flight(server: ServerProcess, body: bytes) -> socket.socket:
    """A raw POST /predict whose body is half sent: the request is in flight until the rest
    comes. Returns once the server holds the first half (its /health counts the bytes)."""
    sock = socket.create_connection((server.host, server.port), timeout=60)
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body[: len(body) // 2])
    deadline = time.monotonic() + 30
    while server.health()["upload_bytes_held"] < len(body) // 2:
        assert time.monotonic() < deadline, "the server never received the first half"
        time.sleep(0.02)
    return sock


def finish(sock: socket.socket, body: bytes) -> tuple[int, dict]:
    """Send the rest of the body and read the answer (status, JSON)."""
    sock.sendall(body[len(body) // 2 :])
    response = http.client.HTTPResponse(sock)
    response.begin()
    import json

    answer = json.loads(response.read())
    sock.close()
    return response.status, answer


def refused(server: ServerProcess) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)


def test_sigterm_refuses_new_connections_and_finishes_the_upload_in_flight(model_path, photos):
    body, server = photos["astronaut"], ServerProcess(model_path)
    with server:
        sock = upload_in_flight(server, body)
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(server), "new connections refused")
        assert server.proc.poll() is None  # still running: the upload is not done
        status, answer = finish(sock, body)
        assert status == 200 and answer["label"] in {"cat", "coffee", "rocket"}
        code = server.proc.wait(30)
        log = server.log()
    assert code == 0, log
    assert "Shutting down" in log and "Finished server process" in log


def test_drain_turns_readiness_off_while_still_answering(model_path, photos, http):
    body, server = photos["chelsea"], ServerProcess(model_path, extra_args=("--drain", "600"))
    with server:
        sock = upload_in_flight(server, body)
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: server.health()["status"] == "stopping", "/health says stopping")
        assert get_json(server.host, server.port, "/health")[0] == 503
        assert http.request(server.url + "/live")[0] == 200  # alive: do not restart it
        assert http.request(server.url + "/predict", body, method="POST")[0] == 200  # serving
        assert "fastcore_cv_ready 0.0" in http.request(server.url + "/metrics")[2]
        server.proc.send_signal(signal.SIGTERM)  # a second one ends the drain now
        wait_for(lambda: refused(server), "new connections refused after the second SIGTERM")
        status, answer = finish(sock, body)
        assert status == 200 and answer["label"] in {"cat", "coffee", "rocket"}
        code = server.proc.wait(30)  # far sooner than the 600 s drain
    assert code == 0


def test_graceful_timeout_bounds_a_request_that_never_finishes(model_path, photos):
    body = photos["coffee"]
    args = ("--graceful-timeout", "1", "--read-timeout", "600")
    server = ServerProcess(model_path, extra_args=args)
    with server:
        sock = upload_in_flight(server, body)  # and never sent the rest
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(30)
        log = server.log()
        rest = b""  # all the server sends until it closes
        while chunk := sock.recv(65536):
            rest += chunk
        sock.close()
    # cancelled: uvicorn answers 500 and closes (the app's handlers never see a cancellation)
    assert rest.startswith(b"HTTP/1.1 500 ") and b"connection: close" in rest.lower()
    assert code == 0 and "timeout graceful shutdown exceeded" in log


@pytest.fixture(scope="module")
def prefixed(model_path):
    """One server run with --root-path PREFIX behind a balancer that strips PREFIX."""
    with ServerProcess(model_path, extra_args=("--root-path", PREFIX)) as server:  # noqa: SIM117
        with Balancer([(server.host, server.port)], PREFIX) as lb:
            yield lb


def test_under_a_prefix_the_page_and_the_api_work(prefixed, photos, http):
    status, head, page = http.request(prefixed.url + PREFIX)  # no trailing slash
    assert status == 200 and f'<base href="{PREFIX}/">' in page
    status, _, answer = http.request(prefixed.url + PREFIX + "/predict?top_k=2",
                                     photos["chelsea"], method="POST")  # fmt: skip
    assert status == 200 and len(answer["top_k"]) == 2
    assert http.request(prefixed.url + PREFIX + "/metadata")[2]["classes"] == [
        "cat", "coffee", "rocket"]  # fmt: skip
    assert http.request(prefixed.url + "/predict", b"x", method="POST")[0] == 404  # not ours
    text = http.request(prefixed.url + PREFIX + "/metrics")[2]
    assert 'fastcore_cv_requests_total{route="/predict",status="200"} 1.0' in text


def test_under_a_prefix_a_browser_loads_the_page_and_predicts(prefixed, chelsea_jpeg, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(prefixed.url + PREFIX)
    page.wait_for_selector("#model:not(:empty)")  # /metadata fetched under the prefix
    page.set_input_files("#file", str(chelsea_jpeg))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.text_content("#label") in {"cat", "coffee", "rocket"}
    assert page.text_content("#error") == "" and errors == []
    forwarded = {path for _, path in prefixed.log}
    assert {"/", "/metadata", "/predict"} <= forwarded


def test_bad_root_path_and_drain_are_refused_before_serving(model_path):
    from fastcore_cv.serve.app import run

    for bad in ("models", "/models/", "/a b", '/"x'):
        with pytest.raises(ValueError, match="root_path"):
            run(model_path, root_path=bad)
    with pytest.raises(ValueError, match="drain_s"):
        run(model_path, drain_s=-1)

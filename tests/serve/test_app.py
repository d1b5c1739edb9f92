"""The web app over real HTTP: answers, limits, JSON errors, and the server staying up."""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from fastcore_cv.export import ModelFileError, Predictor
from fastcore_cv.perf.server import ServerProcess
from fastcore_cv.serve import create_app


def test_page_is_self_contained(server, http):
    status, head, html = http.request(server.url + "/")
    assert status == 200 and head["content-type"].startswith("text/html")
    assert '<input type="file" id="file"' in html and 'fetch("predict"' in html
    assert "http://" not in html and "https://" not in html  # no external assets
    assert "default-src 'none'" in head["content-security-policy"]


def test_multipart_and_raw_body_give_the_predictor_answer(
    server, http, chelsea_jpeg, model_path, kit
):
    photo = chelsea_jpeg.read_bytes()
    expected = Predictor(model_path).predict(photo, top_k=3)
    body, headers = http.multipart({"file": ("chelsea.jpg", photo)})
    for answer in (
        http.request(server.url + "/predict", body, headers),
        http.request(server.url + "/predict", photo, {"Content-Type": "image/jpeg"}),
    ):
        status, _, got = answer
        assert status == 200
        assert got["label"] == expected.label and got["label"] in kit.classes
        assert got["probability"] == pytest.approx(expected.probability, abs=1e-6)
        assert [t["label"] for t in got["top_k"]] == [c for c, _ in expected.top_k]
        assert got["top_k"][0]["probability"] == got["probability"]
        assert got["latency_ms"] > 0
    status, _, got = http.request(server.url + "/predict?top_k=1", photo)
    assert status == 200 and len(got["top_k"]) == 1


@pytest.mark.parametrize(
    ("case", "status", "match"),
    [
        ("text", 415, "not an image"),
        ("truncated", 400, "truncated"),
        ("empty file", 422, "no image"),
        ("too many pixels", 413, "decompression bomb"),
        ("oversized raw", 413, "limit"),
        ("oversized form", 413, "limit"),
        ("empty body", 422, "no image"),
        ("missing field", 422, "missing form field 'file'"),
        ("text field", 422, "must be a file upload"),
        ("bad top_k", 422, "top_k"),
    ],
)
def test_bad_requests_get_json_errors(server, http, kit, chelsea_jpeg, case, status, match):
    photo = chelsea_jpeg.read_bytes()
    big = os.urandom(kit.limits["max_upload_bytes"] + 1)
    url, raw = server.url + "/predict", None
    form = {
        "text": {"file": ("a.jpg", b"just some text")},
        "truncated": {"file": ("a.jpg", photo[: len(photo) // 2])},
        "empty file": {"file": ("a.jpg", b"")},
        "too many pixels": {"file": ("a.png", kit.png_bytes(1100, 1000))},
        "oversized form": {"file": ("a.jpg", big)},
        "missing field": {"photo": ("a.jpg", photo)},
        "text field": {"file": "not a file"},
    }.get(case)
    if case == "oversized raw":
        raw = big
    elif case == "empty body":
        raw = b""
    elif case == "bad top_k":
        url, raw = url + "?top_k=zero", photo
    body, headers = http.multipart(form) if form else (raw, {"Content-Type": "image/jpeg"})
    got_status, head, got = http.request(url, body, headers, method="POST")
    assert got_status == status
    assert head["content-type"] == "application/json"
    assert got["status"] == status and match in got["error"]
    assert http.request(server.url + "/health")[0] == 200  # still up


def test_an_empty_upload_gets_one_answer_raw_or_multipart(server, http):
    raw = http.request(server.url + "/predict", b"", {"Content-Type": "image/jpeg"})
    form = http.request(server.url + "/predict", *http.multipart({"file": ("a.jpg", b"")}))
    assert raw[0] == form[0] == 422 and raw[2] == form[2]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(top_k=st.text(max_size=12))
@example(top_k="\u00b2")
@example(top_k="\u2460")
@example(top_k="\u0663")
@example(top_k="0")
@example(top_k="-1")
@example(top_k=" 2")
@example(top_k="1e3")
@example(top_k="9" * 5000)
@example(top_k="2")
@example(top_k="999999999")
def test_every_top_k_value_gets_an_answer_or_a_4xx_naming_it(server, http, chelsea_jpeg, top_k):
    query = urllib.parse.urlencode({"top_k": top_k})
    status, _, got = http.request(f"{server.url}/predict?{query}", chelsea_jpeg.read_bytes())
    if status == 200:
        assert top_k.isascii() and top_k.isdigit() and int(top_k) >= 1
        assert len(got["top_k"]) == min(int(top_k), 3)
    else:
        assert status == 422 and got["error"].startswith("top_k: ")


def test_an_internal_error_is_a_json_500_and_logs_its_traceback(model_path, http, kit, caplog):
    async def broken(request):
        return {}["no such key"]

    app = create_app(model_path)
    app.router.routes.append(Route("/broken", broken))
    with caplog.at_level(logging.ERROR, logger="fastcore_cv.serve"), kit.ServerThread(app) as s:
        status, _, body = http.request(s.url + "/broken")
        assert http.request(s.url + "/health")[0] == 200
    assert status == 500 and body == {"error": "internal error: KeyError", "status": 500}
    (record,) = [r for r in caplog.records if r.name == "fastcore_cv.serve"]
    assert "GET /broken" in record.getMessage() and record.exc_info[0] is KeyError
    assert "Traceback" in caplog.text and "no such key" in caplog.text


def test_health_metadata_and_unknown_routes(server, http, kit):
    status, _, health = http.request(server.url + "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "model.onnx"
    status, _, meta = http.request(server.url + "/metadata")
    assert status == 200 and meta["classes"] == kit.classes
    assert meta["preprocess"]["size"] == [64, 64] and meta["output"] == "probabilities"
    assert meta["limits"]["max_upload_bytes"] == kit.limits["max_upload_bytes"]
    status, _, body = http.request(server.url + "/nowhere")
    assert status == 404 and body["status"] == 404
    status, _, body = http.request(server.url + "/predict")  # GET
    assert status == 405 and body["error"]


def test_concurrent_requests_all_answer(server, http, chelsea_jpeg):
    photo = chelsea_jpeg.read_bytes()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http.request(server.url + "/predict", photo), range(24)))
    assert {a[0] for a in answers} == {200}
    assert len({a[2]["label"] for a in answers}) == 1


def test_request_timeout_is_a_503(model_path, http, chelsea_jpeg, kit):
    with kit.ServerThread(create_app(model_path, timeout_s=1e-6)) as s:
        status, head, body = http.request(s.url + "/predict", chelsea_jpeg.read_bytes())
        assert status == 503 and "longer than" in body["error"] and head["retry-after"] == "1"
        assert http.request(s.url + "/health")[0] == 200


def test_create_app_checks_its_arguments(model_path, tmp_path):
    with pytest.raises(ValueError, match="max_upload_bytes"):
        create_app(model_path, max_upload_bytes=0)
    with pytest.raises(ValueError, match="timeout_s"):
        create_app(model_path, timeout_s=0)
    with pytest.raises(ModelFileError, match="does not exist"):
        create_app(tmp_path / "missing.onnx")


@pytest.mark.slow  # two worker processes
def test_serve_command_with_two_workers(model_path, http, chelsea_jpeg):
    with ServerProcess(model_path, workers=2) as server:
        answers = [
            http.request(server.url + "/predict", chelsea_jpeg.read_bytes()) for _ in range(6)
        ]
        out = server.log()
    assert {a[0] for a in answers} == {200}
    assert "Started parent process" in out or "Uvicorn running" in out


def test_worker_socket_turns_nagle_off_for_accepted_connections():
    """With --workers N the shared listening socket must carry TCP_NODELAY (uvicorn's leaves
    Nagle on: +43 ms per keep-alive response); accepted connections inherit it."""
    import uvicorn

    from fastcore_cv.serve.app import bind_workers_socket

    config = uvicorn.Config("fastcore_cv.serve.app:app_from_env", host="127.0.0.1", port=0)
    listener = bind_workers_socket(config)
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        listener.listen()
        with socket.create_connection(listener.getsockname()[:2]) as client:
            conn, _ = listener.accept()
            with conn:
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    finally:
        listener.close()

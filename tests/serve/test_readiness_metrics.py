"""Readiness (/health 503 "starting" until the warm-up is done, /live always), /metrics in
Prometheus text scraped after real requests to a real server, the ``threshold`` query and
the "not sure" answer."""

from __future__ import annotations

import asyncio
import json
import time

import onnx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastcore_cv.export import Predictor
from fastcore_cv.export import metadata as meta
from fastcore_cv.serve import create_app


async def _get(app, path: str) -> tuple[int, dict]:
    """One GET straight into the ASGI app (no lifespan unless the caller ran it)."""
    sent, out = False, {}

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] = out.get("body", b"") + message.get("body", b"")

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [], "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}  # fmt: skip
    await app(scope, receive, send)
    return out["status"], json.loads(out["body"])


def test_health_is_503_starting_until_the_warm_up_is_done(model_path):
    app = create_app(model_path)

    async def scenario() -> None:
        status, body = await _get(app, "/health")
        assert (status, body["status"]) == (503, "starting")  # loaded, not warmed up yet
        assert (await _get(app, "/live"))[0] == 200  # liveness answers meanwhile
        events: asyncio.Queue = asyncio.Queue()
        await events.put({"type": "lifespan.startup"})
        done: list[dict] = []

        async def send(message):
            done.append(message)

        lifespan = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, events.get, send)
        )
        deadline = time.monotonic() + 30
        while (await _get(app, "/health"))[0] != 200:
            assert time.monotonic() < deadline, "never became ready"
            await asyncio.sleep(0.01)
        assert (await _get(app, "/health"))[1]["status"] == "ok"
        await events.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(lifespan, 30)
        assert [m["type"] for m in done] == ["lifespan.startup.complete",
                                             "lifespan.shutdown.complete"]  # fmt: skip

    asyncio.run(scenario())


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip


def test_metrics_count_real_requests(model_path, chelsea_jpeg, http, kit):
    """A fresh app (its own registry): 3 answers (one 'not sure' by ?threshold=1), a 415, a
    422, a 404 and a /health, then one scrape."""
    photo = chelsea_jpeg.read_bytes()
    with kit.ServerThread(create_app(model_path, **kit.limits)) as s:
        for query in ("", "?top_k=2", "?threshold=1"):
            assert http.request(s.url + "/predict" + query, photo, method="POST")[0] == 200
        assert http.request(s.url + "/predict", b"not an image", method="POST")[0] == 415
        assert http.request(s.url + "/predict?threshold=x", photo, method="POST")[0] == 422
        assert http.request(s.url + "/no-such-page")[0] == 404
        status, head, text = http.request(s.url + "/metrics")
    assert status == 200 and head["content-type"].startswith("text/plain")
    m = _samples(text)

    def requests(route: str, code: int) -> float:
        key = ("fastcore_cv_requests_total", (("route", route), ("status", str(code))))
        return m.get(key, 0.0)

    assert requests("/predict", 200) == 3 and requests("/predict", 415) == 1
    assert requests("/predict", 422) == 1 and requests("other", 404) == 1
    assert requests("/health", 200) >= 1  # the fixture waits for readiness with it
    assert m[("fastcore_cv_decode_seconds_count", ())] == 3
    assert m[("fastcore_cv_inference_seconds_count", ())] == 3
    assert 0 < m[("fastcore_cv_inference_seconds_sum", ())] < 3 * 10
    assert m[("fastcore_cv_not_sure_total", ())] == 1
    assert m[("fastcore_cv_predictions_total", (("accepted", "false"),))] == 1
    assert m[("fastcore_cv_requests_in_flight", ())] == 1  # the scrape itself
    assert m[("fastcore_cv_ready", ())] == 1
    model_id = Predictor(model_path, warmup=0).info.model_id
    info = [k for k in m if k[0] == "fastcore_cv_model_info"]
    assert len(info) == 1 and ("model_id", model_id) in info[0][1]


@pytest.fixture(scope="module")
def unsure_model(model_path, tmp_path_factory):
    """The serving model with a calibration that accepts only answers >= 99%."""
    model = onnx.load(str(model_path))
    model.metadata_props.add(key=meta.CALIBRATION, value=json.dumps(
        {"temperature": 1.0, "threshold": 0.99, "target_accuracy": 0.99}))  # fmt: skip
    path = tmp_path_factory.mktemp("unsure") / "unsure.onnx"
    onnx.save(model, str(path))
    return path


def test_the_api_says_not_sure_below_the_threshold(unsure_model, chelsea_jpeg, http, kit):
    photo = chelsea_jpeg.read_bytes()
    with kit.ServerThread(create_app(unsure_model, **kit.limits)) as s:
        status, _, p = http.request(s.url + "/predict", photo, method="POST")
        assert status == 200 and p["accepted"] is False and p["threshold"] == 0.99
        assert p["label"] in kit.classes  # the best guess stays visible
        _, _, q = http.request(s.url + "/predict?threshold=0", photo, method="POST")
        assert q["accepted"] is True and q["label"] == p["label"]
        for bad in ("1.5", "-0.1", "nan", "inf", "1e999", "0x1", "", "9" * 50):
            status, _, e = http.request(s.url + f"/predict?threshold={bad}", photo, method="POST")
            assert status == 422 and e["error"].startswith("threshold:"), bad
        _, _, md = http.request(s.url + "/metadata")
        assert md["calibration"]["threshold"] == 0.99 and md["model_id"].startswith("sha256:")
        _, _, text = http.request(s.url + "/metrics")
    assert _samples(text)[("fastcore_cv_not_sure_total", ())] == 1

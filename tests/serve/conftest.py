"""Fixtures for the server tests: an exported model, real photos, and the real server (uvicorn
on an ephemeral 127.0.0.1 port, in a thread) with small limits so that the limits are easy
to reach."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import uvicorn
from PIL import Image
from skimage import data

from fastcore_cv.perf.load import multipart_form
from fastcore_cv.serve.protocol import server_config

CLASSES = ["cat", "coffee", "rocket"]
LIMITS = {"max_upload_bytes": 200_000, "max_pixels": 1_000_000}


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A small CNN (random weights, fixed seed) exported with its metadata."""
    import torch

    from fastcore_cv.export import to_onnx
    from fastcore_cv.vision.models import simple_cnn
    from fastcore_cv.vision.preprocessing import PreprocessConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("serve") / "model.onnx"
    to_onnx(simple_cnn(3, (8, 16)), path, classes=CLASSES,
            preprocess_config=PreprocessConfig(size=64))  # fmt: skip
    return path


@pytest.fixture(scope="session")
def chelsea_jpeg(tmp_path_factory) -> Path:
    """scikit-image's cat photo (451x300) as a JPEG file."""
    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, "JPEG", quality=90)
    return path


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 (port chosen by the OS) in a daemon thread, with
    the server's own protocol and guards (``serve.protocol.server_config``)."""

    def __init__(self, app, **guards) -> None:
        config = server_config(app, host="127.0.0.1", port=0, log_level="warning", **guards)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        while request(self.url + "/health")[0] != 200:  # ready: the model is warmed up
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not become ready (GET /health)")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture(scope="session")
def server(model_path):
    from fastcore_cv.serve import create_app

    with ServerThread(create_app(model_path, **LIMITS)) as s:
        yield s


def request(url: str, body: bytes | None = None, headers: dict | None = None, method=None):
    """(status, headers, parsed JSON or text) of one real HTTP request; 4xx/5xx included."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, head, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, e.headers, e.read()
    text = raw.decode()
    is_json = head.get("content-type", "").startswith("application/json")
    return status, head, json.loads(text) if is_json else text


def multipart(fields: dict[str, tuple[str, bytes] | str]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body and its header: name -> (filename, bytes) for files, str
    for text (``fastcore_cv.perf.load.multipart_form``)."""
    body, content_type = multipart_form(fields)
    return body, {"Content-Type": content_type}


@pytest.fixture(scope="session")
def http() -> SimpleNamespace:
    return SimpleNamespace(request=request, multipart=multipart)


def png_bytes(width: int, height: int) -> bytes:
    """A plain grey PNG (compresses to a few kB whatever its pixel count)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """This file's helpers for tests (``from conftest import`` is ambiguous when several test
    folders have a conftest.py)."""
    return SimpleNamespace(
        classes=CLASSES, limits=LIMITS, ServerThread=ServerThread, png_bytes=png_bytes
    )

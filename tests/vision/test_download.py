"""download_images against a real HTTP server on 127.0.0.1: every outcome is reported."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from fastcore_cv.vision import decode
from fastcore_cv.vision.download import download_images, read_urls
from fastcore_cv.vision.files import get_image_files

MAX_BYTES = 60_000
TIMEOUT = 1.0  # generous: other jobs share these 2 cores; /slow.jpg waits 3x this


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bodies(imaging) -> dict[str, bytes]:
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    out = {
        "good_jpg": imaging.jpeg_bytes(Image.new("RGB", (30, 20), (200, 10, 10))),
        "good_png": _png((10, 200, 10)),
        "other_png": _png((10, 10, 200)),
        "big_jpg": imaging.jpeg_bytes(Image.fromarray(noise), quality=95),
        "bomb_png": imaging.png_header(100_000, 100_000),
    }
    assert len(out["big_jpg"]) > MAX_BYTES
    return out


def routes(b: dict[str, bytes]) -> dict[str, tuple]:
    """path -> (status, content type, body, extra headers)."""
    return {
        "/good.jpg": (200, "image/jpeg", b["good_jpg"], {}),
        "/good.png": (200, "image/png", b["good_png"], {}),
        "/dup.jpg": (200, "image/jpeg", b["good_jpg"], {}),
        "/png-as-text": (200, "text/plain", b["other_png"], {}),
        "/truncated.jpg": (200, "image/jpeg", b["big_jpg"][:3000], {}),
        "/page.html": (200, "text/html", b"<html><body>not a photo</body></html>", {}),
        "/bomb.png": (200, "image/png", b["bomb_png"], {}),
        "/redirect-ftp": (302, "text/plain", b"", {"Location": "ftp://127.0.0.1/x.jpg"}),
        "/redirect-good": (302, "text/plain", b"", {"Location": "/good.png"}),
        "/big.jpg": (200, "image/jpeg", b["big_jpg"], {}),
        "/empty": (200, "image/jpeg", b"", {}),
    }


class Handler(http.server.BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}
    routes: dict[str, tuple] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        if path == "/slow.jpg":  # answers after the client's timeout
            time.sleep(TIMEOUT * 3)
            return self._send(200, "image/jpeg", self.bodies["good_jpg"], {})
        if path == "/stream.jpg":  # no Content-Length: the body ends when the connection does
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(self.bodies["big_jpg"])
            self.close_connection = True
            return
        if path == "/drip.jpg":  # a byte at a time: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.bodies["good_jpg"])))
            self.end_headers()
            for b in self.bodies["good_jpg"][:40]:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(0.05)
            return
        if path.endswith("evil.jpg"):
            return self._send(200, "image/jpeg", self.bodies["other_png"], {})
        if path not in self.routes:
            return self._send(404, "text/plain", b"not found", {})
        self._send(*self.routes[path])

    def _send(self, status, ctype, body, headers):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
            self.wfile.write(body)


@pytest.fixture(scope="module")
def server(bodies):
    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 64  # the default 5 drops connects when 8 workers start at once

    handler = type("Served", (Handler,), {"bodies": bodies, "routes": routes(bodies)})
    httpd = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def run(urls, dest, **kw):
    kw = {"timeout": TIMEOUT, "max_bytes": MAX_BYTES, "progress": False, **kw}
    return download_images(urls, dest, **kw)


def test_every_outcome_is_reported(server, bodies, tmp_path):
    names = [
        "good.jpg", "good.png", "dup.jpg", "png-as-text", "truncated.jpg", "page.html",
        "missing.jpg", "slow.jpg", "big.jpg", "stream.jpg", "bomb.png", "redirect-ftp",
        "redirect-good", "empty",
    ]  # fmt: skip
    urls = [f"{server}/{n}" for n in names] + [
        "file:///etc/passwd",
        "ftp://127.0.0.1/a.jpg",
        "http://",
        "no url",
    ]
    dest = tmp_path / "dl"
    report = run(urls, dest)
    saved = {s.url.rsplit("/", 1)[1]: s.path for s in report.saved}
    failed = {f.url.removeprefix(server + "/"): f.reason for f in report.failed}
    assert set(saved) == {"good.jpg", "good.png", "png-as-text"}
    assert (
        saved["good.jpg"].name == "00000001.jpg"
        and saved["good.jpg"].read_bytes() == bodies["good_jpg"]
    )
    assert saved["good.png"].name == "00000002.png"
    assert saved["png-as-text"].name == "00000004.png"  # extension from the bytes, not the URL
    assert [(d.url.rsplit("/", 1)[1], d.same_as.name) for d in report.duplicates] == [
        ("dup.jpg", "00000001.jpg"),
        ("redirect-good", "00000002.png"),  # followed to /good.png: same bytes
    ]
    assert failed["truncated.jpg"].startswith("truncated, content-type image/jpeg")
    assert failed["page.html"].startswith("not an image, content-type text/html")
    assert failed["missing.jpg"] == "HTTP 404 Not Found"
    assert failed["slow.jpg"].startswith("timed out")
    assert (
        failed["big.jpg"]
        == f"too large: Content-Length {len(bodies['big_jpg'])} > max_bytes={MAX_BYTES}"
    )
    assert failed["stream.jpg"] == f"too large: body exceeds max_bytes={MAX_BYTES}"
    assert failed["bomb.png"].startswith("decompression bomb")
    assert failed["redirect-ftp"].startswith("redirect to a ftp:// URL refused")
    assert failed["empty"].startswith("zero bytes")
    assert failed["file:///etc/passwd"] == "unsupported URL scheme 'file': only http(s)"
    assert failed["ftp://127.0.0.1/a.jpg"] == "unsupported URL scheme 'ftp': only http(s)"
    assert failed["http://"] == "invalid URL: no host"
    assert failed["no url"] == "unsupported URL scheme '(none)': only http(s)"
    total = (
        len(report.saved) + len(report.duplicates) + len(report.failed) + len(report.not_attempted)
    )
    assert total == len(urls)  # nothing swallowed
    assert sorted(p.name for p in dest.iterdir()) == [
        "00000001.jpg",
        "00000002.png",
        "00000004.png",
    ]
    assert "failed: " in str(report) and "saved 3" in str(report)


def test_a_trickling_server_hits_the_total_timeout(server, tmp_path):
    report = run([f"{server}/drip.jpg"], tmp_path, total_timeout=0.4)
    assert report.failed[0].reason == "timed out: download took over 0.4 s"


def test_file_names_never_come_from_the_url(server, tmp_path):
    dest = tmp_path / "inside"
    report = run([f"{server}/..%2F..%2Fevil.jpg", f"{server}/../../evil.jpg"], dest)
    assert [s.path.name for s in report.saved] == ["00000001.png"]
    assert [p.parent for p in get_image_files(tmp_path)] == [dest]


def test_rerun_dedupes_against_existing_files_and_numbers_after_them(server, tmp_path):
    first = run([f"{server}/good.jpg"], tmp_path)
    second = run([f"{server}/good.jpg", f"{server}/good.png"], tmp_path)
    assert second.duplicates[0].same_as == first.saved[0].path
    assert second.saved[0].path.name == "00000003.png"  # after 00000001: 2 + index 1


def test_max_pics_limits_attempts_and_reports_the_rest(server, tmp_path):
    urls = [f"{server}/good.jpg", f"{server}/good.png", f"{server}/missing"]
    report = run(urls, tmp_path, max_pics=1)
    assert len(report.saved) == 1 and report.not_attempted == urls[1:]


def test_url_file_with_comments(server, tmp_path):
    f = tmp_path / "urls.txt"
    f.write_text(f"# my cats\n{server}/good.jpg\n\n  {server}/good.png  \n")
    assert read_urls(f) == [f"{server}/good.jpg", f"{server}/good.png"]
    assert len(run(f, tmp_path / "d").saved) == 2
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_urls(tmp_path / "nope.txt")


def test_files_are_verified_hashed_and_written_atomically(server, bodies, tmp_path, monkeypatch):
    seen = []
    real = decode.load_image
    monkeypatch.setattr(
        "fastcore_cv.vision.download.load_image", lambda *a, **k: seen.append(1) or real(*a, **k)
    )
    report = run([f"{server}/good.jpg"], tmp_path)
    assert seen == [1]  # decoded before being kept
    assert (
        hashlib.sha256(report.saved[0].path.read_bytes()).hexdigest()
        == hashlib.sha256(bodies["good_jpg"]).hexdigest()
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_progress_is_plain_lines_when_not_a_terminal(server, tmp_path, capsys):
    run([f"{server}/good.jpg", f"{server}/missing"], tmp_path, progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "download_images: 2/2 saved=1 dup=0 failed=1"
    assert all("\r" not in line for line in err)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_pics": 0}, "max_pics"),
        ({"n_workers": 0}, "n_workers"),
        ({"timeout": 0}, "timeout"),
        ({"max_bytes": -1}, "max_bytes"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        download_images(["http://127.0.0.1/x.jpg"], tmp_path, **kwargs)

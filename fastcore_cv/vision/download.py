"""Download images from http(s) URLs into a folder, reporting every outcome.

Unlike fastai's download_images, nothing is swallowed: each URL ends in exactly one of
``saved``, ``duplicates``, ``failed`` (with a reason) or ``not_attempted``. Files are decoded
before they are kept, named by us (never from the URL), and written atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from PIL import Image

from fastcore_cv.checks import check_int
from fastcore_cv.progress import Progress
from fastcore_cv.vision.decode import MAX_PIXELS, ImageError, load_image
from fastcore_cv.vision.files import get_image_files

# Decoded formats we keep, with the extension get_image_files will find them by.
SAVE_FORMATS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
DEFAULT_MAX_BYTES = 20 * 2**20  # 20 MiB: far above a web photo, far below a memory problem
USER_AGENT = "fastcore-cv (image downloader; +https://pypi.org/project/fastcore-cv/)"
_CHUNK = 64 * 1024


class Saved(NamedTuple):
    url: str
    path: Path


class Duplicate(NamedTuple):
    url: str
    same_as: Path  # the kept file with identical bytes


class Failed(NamedTuple):
    url: str
    reason: str


@dataclass
class DownloadReport:
    """Every URL's outcome. ``len(saved) + len(duplicates) + len(failed) + len(not_attempted)``
    equals the number of URLs given."""

    dest: Path
    saved: list[Saved] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    not_attempted: list[str] = field(default_factory=list)  # beyond max_pics

    def __str__(self) -> str:
        lines = [
            f"{self.dest}: saved {len(self.saved)}, duplicates {len(self.duplicates)}, "
            f"failed {len(self.failed)}, not attempted {len(self.not_attempted)} (max_pics)"
        ]
        lines += [f"  failed: {f.url}: {f.reason}" for f in self.failed]
        return "\n".join(lines)


class _DownloadError(Exception):
    """One URL failed; the message is the reason reported."""


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): urllib's default also follows ftp://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise _DownloadError(f"redirect to a {scheme or 'relative'}:// URL refused ({newurl})")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    """An opener that speaks only http and https (no file://, ftp://, data: handlers)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _SafeRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def read_urls(urls_or_file: str | os.PathLike | Iterable[str]) -> list[str]:
    """A list of URLs, or a text file of them (one per line; blank lines and # comments skip)."""
    if isinstance(urls_or_file, (str, os.PathLike)):
        text = os.fspath(urls_or_file)
        if "://" in text and not Path(text).exists():
            return [text.strip()]
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"urls_or_file: {path} is not a file (nor a URL)")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    return [str(u).strip() for u in urls_or_file]


def download_images(
    urls_or_file: str | os.PathLike | Iterable[str],
    dest: str | os.PathLike,
    max_pics: int = 1000,
    timeout: float = 4,
    n_workers: int = 8,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    *,
    total_timeout: float | None = None,
    progress: bool = True,
) -> DownloadReport:
    """Download the first ``max_pics`` URLs into ``dest`` as ``00000001.jpg``... (numbered by
    position in the list, after any numbered files already there; extension from the decoded
    format). ``timeout``: seconds for the connection and for each read; ``total_timeout``
    (default 10 x timeout) caps one whole download, so a trickling server cannot hold a worker.
    Identical content (sha256), also against images already in ``dest``, is kept once.
    """
    for name, value in (("max_pics", max_pics), ("n_workers", n_workers), ("max_bytes", max_bytes)):
        check_int(value, name)
    if not timeout > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
    urls = read_urls(urls_or_file)
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    report = DownloadReport(root, not_attempted=urls[max_pics:])
    urls = urls[:max_pics]
    seen, first_number = _existing(root)
    opener = _opener()
    deadline = total_timeout if total_timeout is not None else 10 * timeout

    def work(i: int, url: str) -> tuple[int, Failed | _Ready]:
        try:
            data, ctype = _fetch(opener, url, timeout, deadline, max_bytes)
            ext = _check_image(data, ctype, max_pixels)
            return i, _stage(root, data, ext)
        except _DownloadError as e:
            return i, Failed(url, str(e))
        except Exception as e:  # a bug or an odd network error: still reported, never lost
            return i, Failed(url, f"{type(e).__name__}: {e}")

    # Workers download, verify and stage a temp file; this thread commits results in URL
    # order, so which of two identical images is kept (and every name) is deterministic.
    ready: dict[int, Failed | _Ready] = {}
    committed = 0
    try:
        mode = "auto" if progress else "silent"
        with (
            Progress(len(urls), "download_images", mode, unit="url") as bar,
            ThreadPoolExecutor(n_workers) as pool,
        ):
            jobs = [pool.submit(work, i, url) for i, url in enumerate(urls)]
            for job in as_completed(jobs):
                i, result = job.result()
                ready[i] = result
                while committed in ready:
                    _commit(report, root, first_number + committed, urls[committed],
                            ready.pop(committed), seen)  # fmt: skip
                    committed += 1
                bar.update(status=_counts(report))
    finally:  # interrupted: leave no temp files behind
        for result in ready.values():
            if isinstance(result, _Ready):
                result.tmp.unlink(missing_ok=True)
    return report


def _fetch(opener, url: str, timeout: float, deadline: float, max_bytes: int) -> tuple[bytes, str]:
    """The body of ``url`` and its content type, or _DownloadError with the reason."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise _DownloadError(f"unsupported URL scheme {parts.scheme or '(none)'!r}: only http(s)")
    if not parts.hostname:
        raise _DownloadError("invalid URL: no host")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    start = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            ctype = response.headers.get("Content-Type", "")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _DownloadError(f"too large: Content-Length {length} > max_bytes={max_bytes}")
            body = io.BytesIO()
            while chunk := response.read1(
                _CHUNK
            ):  # returns what has arrived: deadline checks stay live
                if body.tell() + len(chunk) > max_bytes:
                    raise _DownloadError(f"too large: body exceeds max_bytes={max_bytes}")
                body.write(chunk)
                if time.monotonic() - start > deadline:
                    raise _DownloadError(f"timed out: download took over {deadline:g} s")
            return body.getvalue(), ctype
    except _DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise _DownloadError(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise _DownloadError(f"timed out after {timeout:g} s (connect)") from e
        raise _DownloadError(f"cannot connect: {e.reason}") from e
    except TimeoutError as e:
        raise _DownloadError(f"timed out: no data for {timeout:g} s") from e
    except http.client.IncompleteRead as e:
        raise _DownloadError("connection closed early (incomplete body)") from e
    except (http.client.HTTPException, ValueError) as e:
        raise _DownloadError(f"bad response or URL: {e}") from e
    except OSError as e:
        raise _DownloadError(f"network error: {e}") from e


def _check_image(data: bytes, ctype: str, max_pixels: int) -> str:
    """The extension to save ``data`` under, after a full decode; else _DownloadError."""
    try:
        load_image(data, max_pixels=max_pixels)
        with Image.open(io.BytesIO(data)) as img:  # decoded fine above: just read the format
            fmt = img.format
    except ImageError as e:
        shown = f", content-type {ctype}" if ctype else ""
        raise _DownloadError(f"{e.reason}{shown}" + (f": {e.detail}" if e.detail else "")) from e
    if fmt not in SAVE_FORMATS:
        raise _DownloadError(f"unsupported image format {fmt}")
    return SAVE_FORMATS[fmt]


class _Ready(NamedTuple):
    tmp: Path  # the verified bytes, in a hidden temp file inside dest
    ext: str
    digest: str


def _stage(root: Path, data: bytes, ext: str) -> _Ready:
    """Write verified bytes to a hidden temp file in ``root`` (hidden: loaders skip it)."""
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".download-", suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return _Ready(Path(tmp), ext, hashlib.sha256(data).hexdigest())


def _commit(report, root: Path, number: int, url: str, result, seen: dict[str, Path]) -> None:
    """Record a failure, or dedupe by sha256 and atomically rename the temp file into place."""
    if isinstance(result, Failed):
        report.failed.append(result)
        return
    if result.digest in seen:
        result.tmp.unlink(missing_ok=True)
        report.duplicates.append(Duplicate(url, seen[result.digest]))
        return
    path = root / f"{number:08d}{result.ext}"
    while path.exists():  # a file of that name appeared meanwhile: never overwrite it
        number += 1
        path = root / f"{number:08d}{result.ext}"
    os.replace(result.tmp, path)
    seen[result.digest] = path
    report.saved.append(Saved(url, path))


def _existing(root: Path) -> tuple[dict[str, Path], int]:
    """Hashes of images already in ``root``, and the first unused file number."""
    seen: dict[str, Path] = {}
    top = 0
    for p in get_image_files(root, recurse=False):
        seen.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), p)
        if p.stem.isdigit():
            top = max(top, int(p.stem))
    return seen, top + 1


def _counts(report: DownloadReport) -> str:
    """The progress status: how many URLs were saved, duplicates or failed so far."""
    return f"saved={len(report.saved)} dup={len(report.duplicates)} failed={len(report.failed)}"

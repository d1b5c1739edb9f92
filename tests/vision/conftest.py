"""The one fixtures file for vision tests: real image files written to disk.

Each odd case a user's photo folder can hold is here as a real file: EXIF-rotated JPEG,
RGBA PNG, palette GIF, CMYK JPEG, 16-bit PNG, greyscale, truncated JPEG, zero bytes, text
named .jpg, a PNG header claiming 10^10 pixels, hidden files, upper-case extensions, a
symlink loop. ``unprivileged`` makes chmod 000 deny reading even when the tests run as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# Colour of class k in generated class folders: distinct, saturated.
PALETTE = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (200, 30, 200)]


def asymmetric_rgb(h: int = 20, w: int = 40) -> np.ndarray:
    """Left half red, right half blue, a green top row: every flip or rotation shows."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    a[0, :] = (0, 255, 0)
    return a


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header (IHDR + IEND): claims width x height, holds no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def grey16_zeros_png(width: int, height: int) -> bytes:
    """A real 16-bit grey PNG of zeros, compressed row by row: 7000 x 7000 (98 MB of pixels)
    is a 95 KB file, made without holding the pixels in memory."""
    z = zlib.compressobj(9)
    row = bytes(1 + 2 * width)  # filter byte 0, then 2 bytes per pixel
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# linux/capability.h: the two capabilities that let root read any file whatever its mode.
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextlib.contextmanager
def _without_root_file_access() -> Iterator[None]:
    """As root on Linux, clear this thread's effective CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH
    (capset; still permitted, so restored after) so file modes apply to root as to a user.
    Not root: file modes already apply. Skips the test where neither is possible."""
    if os.geteuid() != 0:
        yield
        return
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root, and only Linux can drop root's file access")
    libc = ctypes.CDLL(None, use_errno=True)
    header, caps = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), caps) != 0:
        pytest.skip(f"running as root and capget failed (errno {ctypes.get_errno()})")
    saved = caps[0].effective
    caps[0].effective = saved & ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), caps) != 0:
        pytest.skip(f"running as root and capset failed (errno {ctypes.get_errno()})")
    try:
        yield
    finally:
        caps[0].effective = saved
        if libc.capset(ctypes.byref(header), caps) != 0:
            raise OSError(ctypes.get_errno(), "could not restore root's capabilities")


@pytest.fixture
def unprivileged(tmp_path) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """``with unprivileged(): ...``: inside, chmod 000 really denies reading, also as root
    (checked on a probe file; the test is skipped where that cannot be arranged)."""
    probe = tmp_path / "probe_000"
    probe.write_bytes(b"x")
    probe.chmod(0)

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        with _without_root_file_access():
            try:
                probe.read_bytes()
                denied = False
            except PermissionError:
                denied = True
            if not denied:
                pytest.skip("chmod 000 does not deny reading here")
            yield

    return context


def call_within(fn: Callable[[], object], fifos=(), seconds: float = 60.0) -> object:
    """``fn()`` in a thread that must finish within ``seconds``: its result, or its exception
    re-raised. Past the deadline each FIFO in ``fifos`` gets a writer (so an ``open`` blocked
    on it returns and the thread can end) and the test fails."""
    done: list = []

    def run() -> None:
        try:
            done.append((True, fn()))
        except BaseException as e:  # handed to the test thread
            done.append((False, e))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):  # no reader: nothing is blocked on this one
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"{fn} still running after {seconds} s (blocked on a FIFO?)")
    ok, value = done[0]
    if not ok:
        raise value
    return value


@pytest.fixture(scope="session")
def imaging() -> SimpleNamespace:
    """The helpers above, for tests (``from conftest import`` is ambiguous when several
    test folders have a conftest.py)."""
    return SimpleNamespace(
        asymmetric_rgb=asymmetric_rgb,
        jpeg_bytes=jpeg_bytes,
        png_header=png_header,
        grey16_zeros_png=grey16_zeros_png,
        call_within=call_within,
    )


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """name -> path of every special image file (good and bad), all in one folder."""
    d = tmp_path_factory.mktemp("images")
    out: dict[str, Path] = {}

    def put(name: str, data: bytes | Image.Image, **kw) -> None:
        out[name] = d / name
        if isinstance(data, Image.Image):
            data.save(out[name], **kw)
        else:
            out[name].write_bytes(data)

    rgb = Image.fromarray(asymmetric_rgb())
    put("plain.png", rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored 40 wide x 20 high, shown 20 x 40
    put("exif_rotated.jpg", jpeg_bytes(rgb, exif=exif.tobytes(), quality=95))
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (10, 20, 30, 255)  # opaque left half
    rgba[:, 8:] = (0, 0, 0, 0)  # transparent black right half -> white
    put("rgba.png", Image.fromarray(rgba, "RGBA"))
    put("palette.gif", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4))
    put("cmyk.jpg", jpeg_bytes(Image.new("CMYK", (24, 16), (0, 255, 255, 0))))  # red
    grey16 = np.full((12, 10), 65535, np.uint16)
    grey16[:, :5] = 257 * 100  # -> 100 in 8 bits
    put("grey16.png", Image.fromarray(grey16))
    put("grey.png", Image.fromarray(np.full((10, 14), 77, np.uint8), "L"))
    put("grey.jpg", jpeg_bytes(Image.fromarray(np.full((16, 16), 128, np.uint8), "L")))
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    full = jpeg_bytes(Image.fromarray(noise))
    put("good.jpg", full)
    put("truncated.jpg", full[: len(full) // 2])
    put("zero.jpg", b"")
    put("text.jpg", b"this is a text file, not a JPEG\n")
    put("bomb.png", png_header(100_000, 100_000))  # 10^10 pixels: Pillow itself refuses
    put("large_header.png", png_header(10_000, 10_000))  # 10^8: above our default limit
    put("UPPER.JPG", jpeg_bytes(Image.new("RGB", (8, 8), (1, 2, 3))))
    put("mixed.Png", Image.new("RGB", (8, 8), (4, 5, 6)))
    return out


@pytest.fixture
def make_folder(tmp_path) -> Callable[..., Path]:
    """make_folder({"cat": 5, "dog": 3}, root="x") writes class folders of small JPEG/PNG
    images, each class a different colour (plus noise), and returns the root."""

    def make(
        classes: dict[str, int], root: str | Path = "data", size: int = 24, seed: int = 0
    ) -> Path:
        base = tmp_path / root
        rng = np.random.default_rng(seed)
        for k, (name, n) in enumerate(classes.items()):
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.empty((size, size + 4, 3), np.int16)
                a[:] = PALETTE[k % len(PALETTE)]
                a += rng.integers(-20, 21, a.shape, dtype=np.int16)
                img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
                img.save(folder / (f"{i:03d}.jpg" if i % 2 else f"{i:03d}.png"))
        return base

    return make


@pytest.fixture
def bad_files(images) -> dict[str, bytes]:
    """Bytes of the bad files, to drop into a class folder: name -> content."""
    names = ["truncated.jpg", "zero.jpg", "text.jpg", "bomb.png"]
    return {n: images[n].read_bytes() for n in names}


@pytest.fixture
def tree(tmp_path) -> Path:
    """A folder tree with hidden entries, upper-case extensions, non-images and a symlink loop."""
    root = tmp_path / "tree"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / ".hidden_dir").mkdir()
    (root / "__MACOSX").mkdir()
    tiny = jpeg_bytes(Image.new("RGB", (4, 4)))
    for rel in [
        "a/1.jpg", "a/2.JPEG", "a/3.Png", "b/x.webp", "b/deep/y.TIFF", "b/z.bmp", "top.gif",
        ".hidden.jpg", ".hidden_dir/in_hidden.jpg", "__MACOSX/._a.jpg", "a/notes.txt",
        "a/noext",
    ]:  # fmt: skip
        (root / rel).write_bytes(tiny)
    (root / "b" / "deep" / "loop").symlink_to(root, target_is_directory=True)
    (root / "b" / "self").symlink_to(root / "b", target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def big_jpeg(tmp_path_factory) -> Path:
    """A real 9000 x 8000 (72 MP) grey JPEG, a solid colour at quality 10: 0.8 MB on disk,
    72 MB while it is written; a draft decode (1/8 scale) makes it 1125 x 1000."""
    path = tmp_path_factory.mktemp("big") / "72mp.jpg"
    Image.new("L", (9000, 8000), 128).save(path, quality=10)
    return path

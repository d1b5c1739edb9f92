"""The one fixtures file for vision tests: real image files written to disk.

Each odd case a user's photo folder can hold is here as a real file: EXIF-rotated JPEG,
RGBA PNG, palette GIF, CMYK JPEG, 16-bit PNG, greyscale, truncated JPEG, zero bytes, text
named .jpg, a PNG header claiming 10^10 pixels, hidden files, upper-case extensions, a
symlink loop.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
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


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a header (IHDR + IEND): claims width x height, holds no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def imaging() -> SimpleNamespace:
    """The helpers above, for tests (``from conftest import`` is ambiguous when several
    test folders have a conftest.py)."""
    return SimpleNamespace(
        asymmetric_rgb=asymmetric_rgb, jpeg_bytes=jpeg_bytes, png_header=png_header
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

"""Decode any image source into an 8-bit RGB Pillow image, or raise ImageError saying why.

Sources: a path, bytes, a binary file, a PIL image or a NumPy array. EXIF orientation is
applied; grey, RGBA, palette, CMYK and 16-bit images become RGB; a pixel limit stops
decompression bombs; JPEG draft mode decodes big photos at a reduced scale when allowed.
Pillow + NumPy only (the torch-free Predictor uses it).
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own warning threshold (about 9459 x 9459); a 48 MP phone photo (8000 x 6000) fits,
# a crafted 50000 x 50000 header (2.5 GP, 7.5 GB as RGB) does not.
DEFAULT_MAX_PIXELS = 89_478_485

# ImageError reasons: short, stable strings (verify_images reports them, tests match them).
MISSING = "missing"
ZERO_BYTES = "zero bytes"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
BOMB = "decompression bomb"
CORRUPT = "corrupt"
UNSUPPORTED = "unsupported"

# What every function here accepts as "an image".
ImageSource = (
    str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
)


class ImageError(ValueError):
    """An image that cannot be used. ``source`` names it, ``reason`` is one short word group."""

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        self.source, self.reason, self.detail = source, reason, detail
        super().__init__(f"{source}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.source, self.reason, self.detail))


def describe(source: object) -> str:
    """A short name for an image source, used in every error message."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return str(getattr(source, "name", None) or f"<{type(source).__name__}>")


def load_image(
    source: ImageSource,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode ``source`` fully into an 8-bit RGB image with its EXIF orientation applied.

    ``min_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale while its shorter side stays
    >= min_side (draft mode). Raises ImageError (naming the source) for anything unusable.
    """
    name = describe(source)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, name)
        try:
            source.load()  # a lazily opened image may still be truncated
        except Exception as e:
            raise _classify(e, name) from e
        return _to_rgb(_apply_exif(source, name), name)
    if isinstance(source, np.ndarray):
        return _from_array(source, name, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageError(name, NOT_AN_IMAGE, "a directory")
            if not path.is_file():
                raise ImageError(name, MISSING, "no such file")
            if path.stat().st_size == 0:
                raise ImageError(name, ZERO_BYTES)
            with open(path, "rb") as fp:
                return _decode(fp, name, min_side, max_pixels)
        except PermissionError as e:
            raise ImageError(name, UNREADABLE, e.strerror or "permission denied") from e
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(name, ZERO_BYTES)
        return _decode(io.BytesIO(source), name, min_side, max_pixels)
    if hasattr(source, "read"):
        return _decode(source, name, min_side, max_pixels)
    raise TypeError(
        "image: expected a path, bytes, a binary file, a PIL image or a NumPy array, "
        f"got {type(source).__name__}"
    )


def _decode(fp: BinaryIO, name: str, min_side: int | None, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We apply our own limit (max_pixels) below, with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            _check_pixels(img.size, max_pixels, name)
            if min_side and img.format == "JPEG":
                _draft(img, min_side)
            img.load()  # the full decode: truncated data only shows here
    except ImageError:
        raise
    except (
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        struct.error,
    ) as e:
        raise _classify(e, name) from e
    return _to_rgb(_apply_exif(img, name), name)


def _classify(e: BaseException, name: str) -> ImageError:
    """Map what Pillow raised while opening/decoding to an ImageError with a reason."""
    if isinstance(e, ImageError):
        return e
    if isinstance(e, Image.DecompressionBombError):
        return ImageError(name, BOMB, str(e))
    if isinstance(e, UnidentifiedImageError):
        return ImageError(name, NOT_AN_IMAGE, "no image format recognised")
    if isinstance(e, PermissionError):
        return ImageError(name, UNREADABLE, e.strerror or "permission denied")
    text = str(e) or type(e).__name__
    truncated = isinstance(e, EOFError) or "truncated" in text.lower()
    return ImageError(name, TRUNCATED if truncated else CORRUPT, text)


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(name, CORRUPT, f"image size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(name, BOMB, f"{w}x{h} = {w * h:,} pixels > max_pixels={max_pixels:,}")


def _draft(img: Image.Image, min_side: int) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale whose shorter side is >= min_side."""
    w, h = img.size
    short = min(w, h)
    if short > min_side:
        # draft() keeps each side >= the requested one: request the image scaled to min_side.
        img.draft(img.mode, (math.ceil(w * min_side / short), math.ceil(h * min_side / short)))


def _apply_exif(img: Image.Image, name: str) -> Image.Image:
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not lose the photo: keep it as stored
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:
        raise ImageError(name, CORRUPT, f"cannot apply EXIF orientation: {e}") from e


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency is composited on white (see below)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    try:
        if mode.startswith("I") or mode == "F":
            return Image.fromarray(_to_uint8(np.asarray(img), mode), "L").convert("RGB")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            # Composite on white, not drop alpha: under alpha=0 an image may hold any colour
            # (often black), and white is what a viewer shows for a transparent logo.
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(name, UNSUPPORTED, f"cannot convert mode {mode} to RGB: {e}") from e


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float pixels -> uint8 (16-bit: /257, so 65535 -> 255)."""
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        top = 1.0 if a.size and a.max() <= 1.0 else 255.0  # float TIFFs: [0, 1] or [0, 255]
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    return np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _from_array(a: np.ndarray, name: str, max_pixels: int) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16, bool, or float in [0, 1]) -> RGB."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(name, NOT_AN_IMAGE, "expected an HxW, HxWx1, HxWx3 or HxWx4 array")
    _check_pixels((a.shape[1], a.shape[0]), max_pixels, name)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = _to_uint8(a, "I;16")
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ImageError(name, NOT_AN_IMAGE, "float arrays must hold values in [0, 1]")
        a = np.rint(a * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        if a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255:
            raise ImageError(name, NOT_AN_IMAGE, f"dtype {a.dtype}: expected uint8 values 0..255")
        a = a.astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(a))
    return _to_rgb(img, name)

"""Decode any image source into an 8-bit RGB Pillow image, or raise ImageError saying why.

Sources: a path, bytes, a binary file, a PIL image or a NumPy array. EXIF orientation is
applied; grey, RGBA, palette, CMYK and 16-bit images become RGB; a pixel limit stops
decompression bombs; JPEG draft mode decodes big photos at a reduced scale when allowed.
16/32-bit pixels become 8-bit a strip of rows at a time, so a decode costs about its 8-bit
size, not a float64 copy of the image. Pillow + NumPy only (the torch-free Predictor uses it).
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

# THE default pixel limit (load_image, the Predictor, serve and the CLI), on DECODED pixels:
# a 48 MP phone photo (8000 x 6000) fits; a crafted 50000 x 50000 header (2.5 GP, 10 GB as
# Pillow RGB) does not. At the limit a decoded RGB image is 200 MB (Pillow stores RGB in 4
# bytes per pixel). A JPEG decoded in draft mode (``min_side``) is checked at its reduced
# size, so a 64 MP photo that decodes at 1/8 scale (1 MP) is accepted for training.
MAX_PIXELS = 50_000_000

# ...but its header may claim at most this many pixels, so a crafted header still fails
# before any decoding: Pillow's own hard limit (2 x PIL.Image.MAX_IMAGE_PIXELS by default).
MAX_DRAFT_HEADER_PIXELS = 2 * 89_478_485

# Wide (16/32-bit) pixels are converted to 8 bits this many pixels at a time: the float64
# work for an F image stays at 8 MB per strip whatever the image size.
STRIP_PIXELS = 1 << 20

# ImageError reasons: short, stable strings (verify_images reports them, tests match them).
MISSING = "missing"
ZERO_BYTES = "zero bytes"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
BOMB = "decompression bomb"
CORRUPT = "corrupt"
UNSUPPORTED = "unsupported"
NOT_A_FILE = "not a regular file"  # a FIFO, device or socket: never opened (a FIFO would block)

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


def source_name(source: object) -> str:
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
    max_pixels: int = MAX_PIXELS,
    keep_grey: bool = False,
) -> Image.Image:
    """Decode ``source`` fully into an 8-bit RGB image with its EXIF orientation applied.

    ``min_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale while its shorter side stays
    >= min_side (draft mode). ``keep_grey``: return an opaque grey image as 8-bit "L", a
    quarter of its RGB size, for callers that shrink it before converting (preprocess).
    Raises ImageError (naming the source) for anything unusable.
    """
    name = source_name(source)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, name)
        try:
            source.load()  # a lazily opened image may still be truncated
        except Exception as e:
            raise _classify(e, name, max_pixels) from e
        return _to_8bit_oriented(source, name, keep_grey)
    if isinstance(source, np.ndarray):
        return _to_8bit_oriented(_from_array(source, name, max_pixels), name, keep_grey)
    if isinstance(source, (str, os.PathLike)):
        with _open_regular_file(source, name) as fp:
            return _to_8bit_oriented(_decode(fp, name, min_side, max_pixels), name, keep_grey)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(name, ZERO_BYTES)
        fp = io.BytesIO(source)
        return _to_8bit_oriented(_decode(fp, name, min_side, max_pixels), name, keep_grey)
    if hasattr(source, "read"):
        return _to_8bit_oriented(_decode(source, name, min_side, max_pixels), name, keep_grey)
    raise TypeError(
        "image: expected a path, bytes, a binary file, a PIL image or a NumPy array, "
        f"got {type(source).__name__}"
    )


# What a path that is not a regular file is, for the error message.
_FILE_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _check_regular_file(mode: int, name: str) -> None:
    if stat.S_ISDIR(mode):
        raise ImageError(name, NOT_AN_IMAGE, "a directory")
    if not stat.S_ISREG(mode):
        kind = next((k for is_kind, k in _FILE_KINDS if is_kind(mode)), "special file")
        raise ImageError(name, NOT_A_FILE, kind)


def _open_regular_file(path: str | os.PathLike, name: str) -> BinaryIO:
    """Open a regular, non-empty file for reading; anything else raises ImageError.

    FIFOs and devices are refused from ``stat`` before any open; the open itself is
    non-blocking and re-checked with ``fstat``, so a file swapped for a FIFO in between
    cannot hang the caller either.
    """
    try:
        info = os.stat(path)
        _check_regular_file(info.st_mode, name)
        if info.st_size == 0:
            raise ImageError(name, ZERO_BYTES)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except ImageError:
        raise
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ImageError(name, MISSING, "no such file") from e
    except ValueError as e:  # a NUL byte in the name: no file can have it
        raise ImageError(name, MISSING, str(e)) from e
    except OSError as e:  # permission denied, a symlink loop, a name too long...
        raise ImageError(name, UNREADABLE, e.strerror or type(e).__name__) from e
    try:
        _check_regular_file(os.fstat(fd).st_mode, name)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _decode(fp: BinaryIO, name: str, min_side: int | None, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We apply our own limit (max_pixels) below, with a clearer message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            note = ""
            if min_side and img.format == "JPEG":
                header = img.size
                cap = max(max_pixels, MAX_DRAFT_HEADER_PIXELS)
                _check_pixels(header, cap, name, limit_name="MAX_DRAFT_HEADER_PIXELS")
                _draft(img, min_side)
                if img.size != header:
                    note = f"drafted from {header[0]}x{header[1]}"
            _check_pixels(img.size, max_pixels, name, note)  # the pixels the decode holds
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
        raise _classify(e, name, max_pixels) from e
    return img


def _classify(e: BaseException, name: str, max_pixels: int) -> ImageError:
    """Map what Pillow raised while opening/decoding to an ImageError with a reason."""
    if isinstance(e, ImageError):
        return e
    if isinstance(e, Image.DecompressionBombError):
        return ImageError(name, BOMB, _bomb_detail(str(e), max_pixels))
    if isinstance(e, UnidentifiedImageError):
        return ImageError(name, NOT_AN_IMAGE, "no image format recognised")
    if isinstance(e, PermissionError):
        return ImageError(name, UNREADABLE, e.strerror or "permission denied")
    text = str(e) or type(e).__name__
    truncated = isinstance(e, EOFError) or "truncated" in text.lower()
    return ImageError(name, TRUNCATED if truncated else CORRUPT, text)


def _bomb_detail(pillow_message: str, max_pixels: int) -> str:
    """Pillow refused a header above its own hard limit (2 x PIL.Image.MAX_IMAGE_PIXELS)
    before we saw the size: say it in terms of the caller's ``max_pixels``."""
    found = re.search(r"\((\d+) pixels\)", pillow_message)
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    if found and int(found.group(1)) <= max_pixels:  # the caller allowed more than Pillow does
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return (
            f"{pixels} <= max_pixels={max_pixels:,} but > {limit:,}, Pillow's hard limit "
            "(raise PIL.Image.MAX_IMAGE_PIXELS too)"
        )
    return f"{pixels} > max_pixels={max_pixels:,}"


def _check_pixels(
    size: tuple[int, int], max_pixels: int, name: str, note: str = "", limit_name: str = ""
) -> None:
    """Refuse a size of more than ``max_pixels`` (``limit_name`` in the message if given)."""
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(name, CORRUPT, f"image size {w}x{h}")
    if w * h > max_pixels:
        how = f" ({note})" if note else ""
        limit = f"{limit_name or 'max_pixels'}={max_pixels:,}"
        raise ImageError(name, BOMB, f"{w}x{h}{how} = {w * h:,} pixels > {limit}")


def _draft(img: Image.Image, min_side: int) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale whose shorter side is >= min_side."""
    w, h = img.size
    short = min(w, h)
    if short > min_side:
        # draft() keeps each side >= the requested one: request the image scaled to min_side.
        img.draft(img.mode, (math.ceil(w * min_side / short), math.ceil(h * min_side / short)))


# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _to_8bit_oriented(img: Image.Image, name: str, keep_grey: bool) -> Image.Image:
    """A decoded image -> 8-bit RGB (or opaque grey "L" when ``keep_grey``), upright.

    Wide pixels are made 8-bit before the EXIF transpose and the RGB copy, so neither is paid
    at 16/32 bits, and the wide image can be freed as soon as its 8-bit copy exists.
    """
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not lose the photo: keep it as stored
        orientation = 1
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_to_uint8(img, img.mode))
    if orientation in _ORIENTATIONS:
        try:
            img = img.transpose(_ORIENTATIONS[orientation])
        except Exception as e:
            raise ImageError(name, CORRUPT, f"cannot apply EXIF orientation: {e}") from e
        _drop_orientation(img)
    if keep_grey and img.mode == "L" and "transparency" not in img.info:
        return img
    return _to_rgb(img, name)


# XMP can carry the orientation too (Pillow's getexif() reads it from there).
_XMP_ORIENTATION = (rb'tiff:Orientation="[0-9]"', rb"<tiff:Orientation>[0-9]</tiff:Orientation>")


def _drop_orientation(img: Image.Image) -> None:
    """Remove the orientation tag from an image just made upright, as ImageOps.exif_transpose
    does, so decoding the result again does not rotate it a second time."""
    exif = img.getexif()
    if 0x0112 not in exif:
        return
    del exif[0x0112]
    if "exif" in img.info:
        img.info["exif"] = exif.tobytes()
    for key in ("XML:com.adobe.xmp", "xmp"):
        value = img.info.get(key)
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            for pattern in _XMP_ORIENTATION:
                value = re.sub(pattern, b"", value)
            img.info[key] = value.decode() if isinstance(img.info[key], str) else value


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any 8-bit Pillow mode -> RGB. Transparency is composited on white (see below)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            # Composite on white, not drop alpha: under alpha=0 an image may hold any colour
            # (often black), and white is what a viewer shows for a transparent logo.
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(name, UNSUPPORTED, f"cannot convert mode {mode} to RGB: {e}") from e


def _to_uint8(
    src: Image.Image | np.ndarray, mode: str, strip_pixels: int = STRIP_PIXELS
) -> np.ndarray:
    """16/32-bit integer or float pixels (an "I;16", "I" or "F" image, or an HxW[xC] array)
    -> uint8, a strip of rows at a time. Integers: round(v / 257) clipped to 0..255, so
    65535 -> 255. Floats: NaN -> 0, scaled by 255 when all are <= 1 (float TIFFs hold [0, 1]
    or [0, 255]), rounded and clipped. Memory: the uint8 result plus one strip."""
    shape = (src.height, src.width) if isinstance(src, Image.Image) else src.shape
    rows = max(1, strip_pixels // max(math.prod(shape[1:]), 1))
    out = np.empty(shape, np.uint8)
    if mode == "F":
        top = 1.0
        for _, strip in _row_strips(src, rows):
            if np.nan_to_num(strip).max() > 1.0:
                top = 255.0
                break
        for at, strip in _row_strips(src, rows):
            f = np.nan_to_num(strip.astype(np.float64))
            with np.errstate(over="ignore"):  # +-inf became +-max float: -> +-inf, clipped
                f *= 255.0 / top
            out[at] = np.clip(np.rint(f, out=f), 0, 255, out=f)
        return out
    for at, strip in _row_strips(src, rows):
        # round(v / 257) == (v + 128) // 257 exactly: v / 257 never ends in .5 (257 is odd).
        # Clipping v to 0..65535 first clips the result to 0..255. uint32: v + 128 fits.
        v = np.clip(strip, 0, 65535).astype(np.uint32)
        v += 128
        v //= 257
        out[at] = v
    return out


def _row_strips(src: Image.Image | np.ndarray, rows: int) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, pixels) for successive strips of ``rows`` rows, never the whole image at
    once (``np.asarray`` of a whole Pillow image would copy all of it)."""
    h = src.height if isinstance(src, Image.Image) else src.shape[0]
    for y in range(0, h, rows):
        at = slice(y, min(h, y + rows))
        if isinstance(src, Image.Image):
            yield at, np.asarray(src.crop((0, at.start, src.width, at.stop)))
        else:
            yield at, src[at]


def _from_array(a: np.ndarray, name: str, max_pixels: int) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16, bool, or float in [0, 1]) -> an 8-bit
    L, RGB or RGBA image."""
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
    return Image.fromarray(np.ascontiguousarray(a))

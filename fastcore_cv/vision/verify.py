"""Find the image files that cannot be used, each with its reason; optionally delete them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from fastcore_cv.vision.decode import MAX_PIXELS, ImageError, load_image
from fastcore_cv.vision.files import get_image_files


class BadImage(NamedTuple):
    """A file that failed to decode. ``reason``: zero bytes, not an image, truncated,
    decompression bomb, unreadable, corrupt, unsupported, missing or not a regular file (a
    FIFO or a device: never opened); ``detail``: what Pillow said, or what the file is;
    ``deleted``: whether verify_images(delete=True) removed it."""

    path: Path
    reason: str
    detail: str = ""
    deleted: bool = False

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


class BadImageWarning(UserWarning):
    """Bad image files were skipped (the message names them)."""


def check_image(
    path: str | os.PathLike, *, min_side: int | None = None, max_pixels: int = MAX_PIXELS
) -> BadImage | None:
    """Decode ``path`` completely; None when it is a usable image, else why not."""
    try:
        load_image(path, min_side=min_side, max_pixels=max_pixels)
    except ImageError as e:
        return BadImage(Path(path), e.reason, e.detail)
    return None


def find_bad_images(
    files: Iterable[str | os.PathLike],
    *,
    min_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
    num_workers: int = 0,
) -> list[BadImage]:
    """``check_image`` over many files, in order; threads help because Pillow's decoders
    release the GIL."""
    files = list(files)

    def check(p: str | os.PathLike) -> BadImage | None:
        return check_image(p, min_side=min_side, max_pixels=max_pixels)

    if num_workers > 0 and len(files) > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            results = list(pool.map(check, files))
    else:
        results = [check(p) for p in files]
    return [r for r in results if r is not None]


def verify_images(
    path_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    delete: bool = False,
    *,
    max_pixels: int = MAX_PIXELS,
    num_workers: int = 0,
) -> list[BadImage]:
    """Every bad image under a folder (or in a list of files), fully decoded, with its reason.

    ``delete=True`` removes them; a file that cannot be removed keeps ``deleted=False``.
    Unlike ``PIL.Image.verify`` this runs the decoder to the end, so truncated files are found.
    """
    if isinstance(path_or_files, (str, os.PathLike)):
        files: list[Path] = get_image_files(path_or_files)
    else:
        files = [Path(p) for p in path_or_files]
    bad = find_bad_images(files, max_pixels=max_pixels, num_workers=num_workers)
    if delete:
        bad = [b._replace(deleted=_remove(b.path)) for b in bad]
    return bad


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:  # already gone, or not ours to remove
        return False
    return True

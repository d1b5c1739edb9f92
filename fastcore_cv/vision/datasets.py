"""Offline example data, written as ordinary image folders (the layout a user's photos have).

- digits: scikit-learn's 1,797 8x8 handwritten digits -> ``dest/<0..9>/<n>.png``.
- textures: crops of scikit-image's brick/grass/gravel photos -> ``dest/{train,valid}/<class>/``.

Both ship inside their packages (no network). Writing is idempotent (a complete folder is left
alone) and atomic per file (temp file + rename), so an interrupted run is finished next time.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastcore_cv.checks import check_int

TEXTURES = ("brick", "grass", "gravel")


def write_digits_folder(dest: str | os.PathLike, size: int = 32) -> Path:
    """Write the digits as grey PNGs (white ink on black) of ``size`` x ``size`` pixels.

    The 8x8 originals (values 0..16) are scaled to 0..255 and enlarged with bicubic
    resampling, so strokes stay smooth. Returns ``dest``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size: expected an int >= 8 (the digits are 8x8), got {size!r}")
    load_digits = _optional("sklearn.datasets", "scikit-learn").load_digits

    digits = load_digits()
    root = Path(dest)
    planned = [
        (root / str(int(label)) / f"{i:04d}.png", image)
        for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True))
    ]

    def render(image: np.ndarray) -> Image.Image:
        img = Image.fromarray(np.rint(image * (255 / 16)).astype(np.uint8), "L")
        return img if size == 8 else img.resize((size, size), Image.Resampling.BICUBIC)

    _write_missing(planned, render)
    return root


def write_texture_folder(dest: str | os.PathLike, size: int = 96, stride: int = 48) -> Path:
    """Crops of three 512x512 texture photos: the top half gives ``train/``, the bottom half
    ``valid/`` (no crop straddles the two, so validation never sees training pixels).

    With size 96 and stride 48: 4 x 9 = 36 crops per class per split. Returns ``dest``.
    """
    check_int(size, "size", 8, 256)
    check_int(stride, "stride")
    skimage_data = _optional("skimage.data", "scikit-image")

    root = Path(dest)
    planned = []
    for name in TEXTURES:
        photo = getattr(skimage_data, name)()
        half = photo.shape[0] // 2
        for split, rows in (("train", photo[:half]), ("valid", photo[half:])):
            n = 0
            for top in range(0, rows.shape[0] - size + 1, stride):
                for left in range(0, rows.shape[1] - size + 1, stride):
                    crop = rows[top : top + size, left : left + size]
                    planned.append((root / split / name / f"{n:03d}.png", crop))
                    n += 1
    _write_missing(planned, lambda crop: Image.fromarray(np.ascontiguousarray(crop)))
    return root


def _optional(module: str, dist: str) -> Any:
    """Import an optional dependency of the example data, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(
            f"the example data needs {dist}: pip install 'fastcore-cv[data]' (or {dist})"
        ) from None


def _write_missing(planned, render) -> None:
    """Write each (path, data) whose file is missing: render to a hidden temp file, rename."""
    for path, data in planned:
        if path.is_file() and path.stat().st_size > 0:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
        try:
            with os.fdopen(fd, "wb") as f:
                render(data).save(f, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

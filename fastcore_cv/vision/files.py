"""Find the image files under a folder: by extension, hidden entries skipped, loop-safe, sorted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Folders that only ever hold copies or metadata (macOS zip resource forks).
SKIP_FOLDERS = frozenset({"__MACOSX"})


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a name with an image extension (any case) that is not hidden."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Hidden files and folders (".git", "._photo.jpg") and macOS zip debris are skipped."""
    return name.startswith(".") or name in SKIP_FOLDERS


def get_image_files(path: str | os.PathLike, recurse: bool = True) -> list[Path]:
    """Every image file under ``path`` in sorted (deterministic) order.

    Symlinked folders are followed once: a folder whose real path was already visited is
    skipped, so a link back to a parent cannot loop. Hidden entries below ``path`` are skipped
    (``path`` itself may be hidden, e.g. ``~/.data/photos``).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"path: {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"path: {root} is not a folder")
    found: list[Path] = []
    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if recurse and not is_hidden(d) and real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept  # os.walk descends only into these
        found.extend(Path(folder, f) for f in files if is_image_file(f))
    return sorted(found, key=lambda p: p.parts)


def image_subfolders(path: str | os.PathLike) -> list[Path]:
    """The visible immediate subfolders of ``path``, sorted by name."""
    return sorted(
        (p for p in Path(path).iterdir() if p.is_dir() and not is_hidden(p.name)),
        key=lambda p: p.name,
    )


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

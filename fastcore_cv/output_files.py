"""Writing output files safely: check a path can be written before the long work, then write
it atomically (a temp file beside it, then ``os.replace``).

A crash, an exception or a failed check leaves the old file (or none), never half a file.
Torch-free (``atomic_save`` imports torch only when called), so the Predictor can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The process's umask, read once at import: os.umask can only be read by setting it, which is
# process-wide, so reading it per call would race with other threads creating files.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(path: str | os.PathLike, name: str, *, folder: bool = False) -> Path:
    """Return ``path`` if a file (or, with ``folder``, a folder) can be written there; else
    raise ValueError naming ``name``. Run it before the work, so a bad path loses nothing.

    The folder, or its nearest existing parent, is probed by really creating a file in it:
    permission bits say nothing when running as root, a read-only mount or /proc does.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} exists and is not a folder")
    if not folder:
        if path.is_dir():
            raise ValueError(f"{name}: {path} is a folder; expected a file to write")
        if path.exists() and not path.is_file():
            raise ValueError(f"{name}: {path} exists and is not a regular file")
    parent = path if folder else path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name}: cannot create {parent}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".fastcore-cv-probe-")
    except OSError as e:
        raise ValueError(f"{name}: cannot write in {existing} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success it becomes ``path``, else it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a model file is read by servers too
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # the bytes reach the disk before the name points at them
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # and the new name survives a power cut
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    """fsync a folder, so a rename in it is on disk (one call per file written: cheap next to
    the file's own fsync). Skipped where folders cannot be opened (not POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename still happened
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def size_text(n: int) -> str:
    """A file size for reports: '18.8 MB' or '95 kB'."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"

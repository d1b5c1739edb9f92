"""What a dataset folder holds, file by file: relative path, class, split, and a fingerprint
(size, mtime, sha256) so a file changed after scoring is refused instead of moved blindly.

The classes come from the same reader the loaders use (vision/layout.py), so dot-folders
(the journal and trash under ``FOLDER/.fastcore-cv/``) are never files or classes here.
Also the one place that turns a path sent by a user into a file inside FOLDER (``inside``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from fastcore_cv.vision.files import sha256_of
from fastcore_cv.vision.layout import read_layout


class CleanError(ValueError):
    """Bad input to the cleaner; ``status`` is the HTTP code the app answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    """One image file: ``path`` relative to FOLDER (POSIX), its class and split ("" for a
    folder of class folders), and its fingerprint when scored."""

    path: str
    label: str
    split: str
    size: int
    mtime_ns: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def fingerprint(path: Path) -> tuple[int, int, str]:
    """(size, mtime_ns, sha256) of ``path`` now."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, sha256_of(path)


def model_fingerprint(model: str | os.PathLike) -> list:
    """[resolved path, size, mtime_ns] of the model file: cached scores are for this one."""
    st = Path(model).stat()
    return [str(Path(model).resolve()), st.st_size, st.st_mtime_ns]


def scan(folder: str | os.PathLike) -> tuple[list[str], list[Item]]:
    """(sorted classes, every image file as an Item) of ``folder``, in the loaders' layout:
    ``FOLDER/<class>/`` or ``FOLDER/{train,valid}/<class>/``."""
    root = Path(folder)
    with warnings.catch_warnings():  # loose images or empty classes: not the cleaner's concern
        warnings.simplefilter("ignore")
        layout = read_layout(root)
    pools = {"train" if layout.kind == "split" else "": layout.train}
    if layout.valid is not None:
        pools["valid"] = layout.valid
    if layout.kind == "pool" and layout.root != root:  # FOLDER/train/ alone
        pools = {"train": layout.train}
    items = []
    for split, pool in pools.items():
        for label, files in sorted(pool.items()):
            for p in files:
                size, mtime, digest = fingerprint(p)
                rel = p.relative_to(root).as_posix()
                items.append(Item(rel, label, split, size, mtime, digest))
    return sorted(layout.train), items


def inside(folder: Path, rel: object, what: str = "path") -> Path:
    """``folder / rel`` when ``rel`` is a relative path that stays inside ``folder`` (no
    ``..``, not absolute, no symlink leading out); else CleanError (403) naming it."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise CleanError(f"{what}: expected a path relative to the folder, got {rel!r}", 422)
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise CleanError(f"{what}: {rel!r} is absolute; paths are relative to the folder", 403)
    if ".." in pure.parts:
        raise CleanError(f"{what}: {rel!r} leads out of the folder (..)", 403)
    target = folder / pure
    real, base = os.path.realpath(target), os.path.realpath(folder)
    if not real.startswith(base.rstrip(os.sep) + os.sep):
        raise CleanError(f"{what}: {rel!r} is a link that leads out of the folder", 403)
    return target


def class_folder(folder: Path, item: Item, label: str) -> Path:
    """Where ``item`` goes when relabelled ``label``: the sibling class folder of its split."""
    return folder / item.split / label if item.split else folder / label

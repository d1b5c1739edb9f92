"""Read a dataset folder's layout: which classes, which images, already split or not.

Two layouts, as in the lesson: ``path/<class>/<image>`` (split later with a seed), or
``path/train/<class>/<image>`` + ``path/valid/<class>/<image>``. Anything else gets an error
that names the path and says what was expected.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from fastcore_cv.vision.files import get_image_files, image_subfolders, is_image_file


@dataclass
class Layout:
    """What a folder holds: class -> image paths, for one pool or for train and valid."""

    root: Path
    kind: str  # "split" (train/ and valid/ given) or "pool" (to be split by valid_pct)
    train: dict[str, list[Path]]
    valid: dict[str, list[Path]] | None
    expected: str  # the layout, spelled out, for error messages


def read_layout(
    path: str | Path, train: str | None = "train", valid: str | None = "valid"
) -> Layout:
    """The layout of ``path``; raises FileNotFoundError/NotADirectoryError/ValueError."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"path: {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"path: {root} is not a folder")
    expected = (
        f"{root}/<class>/<image> or {root}/{train}/<class>/<image> + {root}/{valid}/<class>/<image>"
    )
    tdir = root / train if train else None
    vdir = root / valid if valid else None
    try:
        has_t = tdir is not None and tdir.is_dir()
        has_v = vdir is not None and vdir.is_dir()
    except OSError as e:
        raise _cannot_list(root, e) from e
    if has_t and has_v:
        t = class_folders(tdir, f"{tdir}/<class>/<image>")
        v = class_folders(vdir, f"{vdir}/<class>/<image>", min_classes=1)
        extra = sorted(set(v) - set(t))
        if extra:
            warnings.warn(
                f"{vdir}: class folder(s) {extra} have no training images in {tdir}; "
                "their validation images are ignored",
                stacklevel=3,
            )
            v = {c: files for c, files in v.items() if c in t}
        return Layout(root, "split", t, v, expected)
    if has_v:
        raise ValueError(f"path: {root} has {valid}/ but no {train}/ folder; expected {expected}")
    if has_t:  # train/ alone: split it with valid_pct
        return Layout(tdir, "pool", class_folders(tdir, f"{tdir}/<class>/<image>"), None, expected)
    return Layout(root, "pool", class_folders(root, expected), None, expected)


def class_folders(folder: Path, expected: str, min_classes: int = 2) -> dict[str, list[Path]]:
    """Class name -> its images (directly inside the class folder), sorted.

    Empty and unreadable class folders are dropped with a warning naming them; images in
    sub-sub-folders raise, since their class would be ambiguous.
    """
    try:
        subs = image_subfolders(folder)
        loose = [p for p in folder.iterdir() if p.is_file() and is_image_file(p.name)]
    except OSError as e:  # the dataset folder itself: nothing to train on, say which and why
        raise _cannot_list(folder, e) from e
    if not subs:
        if loose:
            raise ValueError(
                f"{folder}: {len(loose)} image(s) lie directly in this folder, but classes "
                f"come from folder names: expected {expected}"
            )
        raise ValueError(f"{folder}: no class folders (empty folder?); expected {expected}")
    if loose:
        warnings.warn(
            f"{folder}: {len(loose)} image(s) directly in this folder have no class and are "
            f"ignored (e.g. {loose[0].name}); expected {expected}",
            stacklevel=4,
        )
    classes: dict[str, list[Path]] = {}
    empty: list[Path] = []
    unreadable: list[str] = []
    for sub in subs:
        try:
            inner = image_subfolders(sub)
        except OSError as e:  # as unreadable files are: skip it and say so, do not stop
            unreadable.append(f"{sub} ({e.strerror or e})")
            continue
        nested = [d for d in inner if not _loops_back(d, sub) and get_image_files(d)]
        if nested:
            hint = ""
            if not get_image_files(sub, recurse=False):
                hint = f" (did you mean path={sub}?)"
            raise ValueError(
                f"{nested[0]}: nested folders deeper than expected: images in a sub-folder of "
                f"class folder '{sub.name}'; expected {expected}{hint}"
            )
        files = get_image_files(sub, recurse=False)
        if files:
            classes[sub.name] = files
        else:
            empty.append(sub)
    if unreadable:
        warnings.warn(
            f"skipped {len(unreadable)} unreadable class folder(s): " + ", ".join(unreadable),
            stacklevel=4,
        )
    if empty:
        warnings.warn(
            f"dropped {len(empty)} class folder(s) with no images: "
            + ", ".join(str(e) for e in empty),
            stacklevel=4,
        )
    check_enough_classes(classes, folder, expected, min_classes)
    return classes


def _cannot_list(folder: Path, e: OSError) -> OSError:
    """The same kind of error, naming the folder without an "[Errno 13]" prefix."""
    return type(e)(f"path: cannot list {folder} ({e.strerror or e})")


def _loops_back(link: Path, folder: Path) -> bool:
    """A sub-folder that is (a link to) ``folder`` itself or one of its parents."""
    real, here = os.path.realpath(link), os.path.realpath(folder)
    return here == real or here.startswith(real.rstrip(os.sep) + os.sep)


def check_enough_classes(
    classes: dict[str, list[Path]], folder: Path, expected: str, min_classes: int = 2
) -> None:
    """A classifier needs two classes; say which folder falls short."""
    if len(classes) >= min_classes:
        return
    if not classes:
        raise ValueError(f"{folder}: no class folder holds any image; expected {expected}")
    raise ValueError(
        f"{folder}: only one class ({next(iter(classes))!r}); a classifier needs at least 2 "
        f"class folders; expected {expected}"
    )

"""``ImageDataLoaders.from_csv``: labels kept in a CSV (fastai's ``from_csv``), e.g. the
``cleaned.csv`` that ``fastcore-cv clean`` writes after an apply.

The CSV names each image (relative to ``path``, or to ``path/folder``) and its label; an
optional boolean column (``is_valid`` by default, when present) gives the split, else it is
split with ``valid_pct`` and ``seed`` as ``from_folder`` does. Then the same steps as
``from_folder``: bad files dropped with one warning, one ImageLoader per split.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fastcore_cv.vision.augment import TrainTransform
from fastcore_cv.vision.data import _report_bad, split_items
from fastcore_cv.vision.loader import ImageDataset
from fastcore_cv.vision.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_PIXELS,
    PreprocessConfig,
)
from fastcore_cv.vision.verify import BadImageWarning, find_bad_images

TRUE = {"true", "1", "yes", "valid"}
FALSE = {"false", "0", "no", "train", ""}


def _column(header: list[str], col: int | str, name: str, csv_path: Path) -> int:
    if isinstance(col, int) and not isinstance(col, bool):
        if not 0 <= col < len(header):
            raise ValueError(f"{name}: column {col} is not in {csv_path} ({len(header)} columns)")
        return col
    if col not in header:
        raise ValueError(f"{name}: no column {col!r} in {csv_path} (header: {header})")
    return header.index(col)


def read_label_csv(
    csv_path: Path,
    root: Path,
    fn_col: int | str = 0,
    label_col: int | str = 1,
    valid_col: int | str | None = None,
    delimiter: str = ",",
) -> tuple[list[Path], list[str], list[bool] | None]:
    """(image paths, labels, is_valid or None) from a CSV with a header row; a missing
    file or a bad value raises ValueError naming the CSV line."""
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except FileNotFoundError:
        raise FileNotFoundError(f"csv_fname: {csv_path} does not exist") from None
    if not rows:
        raise ValueError(f"csv_fname: {csv_path} is empty; expected a header and rows")
    header, body = rows[0], rows[1:]
    fi = _column(header, fn_col, "fn_col", csv_path)
    li = _column(header, label_col, "label_col", csv_path)
    if valid_col is None and "is_valid" in header:
        valid_col = "is_valid"
    vi = None if valid_col is None else _column(header, valid_col, "valid_col", csv_path)
    paths, labels, valid = [], [], []
    for n, row in enumerate(body, start=2):
        if not any(cell.strip() for cell in row):
            continue
        need = max(fi, li, -1 if vi is None else vi)
        if len(row) <= need:
            raise ValueError(f"{csv_path}:{n}: {len(row)} column(s), expected {need + 1}")
        p = root / row[fi]
        if not p.is_file():
            raise ValueError(f"{csv_path}:{n}: image {p} does not exist")
        if not row[li].strip():
            raise ValueError(f"{csv_path}:{n}: empty label for {row[fi]}")
        paths.append(p)
        labels.append(row[li].strip())
        if vi is not None:
            v = row[vi].strip().lower()
            if v not in TRUE | FALSE:
                raise ValueError(f"{csv_path}:{n}: {header[vi]} must be true/false, got {v!r}")
            valid.append(v in TRUE)
    if not paths:
        raise ValueError(f"csv_fname: {csv_path} lists no images")
    return paths, labels, (valid if vi is not None else None)


def from_csv(
    cls: Any,
    path: str | os.PathLike,
    csv_fname: str | os.PathLike = "labels.csv",
    *,
    fn_col: int | str = 0,
    label_col: int | str = 1,
    valid_col: int | str | None = None,
    folder: str | None = None,
    delimiter: str = ",",
    valid_pct: float = 0.2,
    seed: int | None = 42,
    size: int | tuple[int, int] = 224,
    bs: int = 64,
    stratify: bool = True,
    oversample: bool = False,
    augment: bool | dict[str, Any] = True,
    strict: bool = False,
    num_workers: int = 0,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    flip: bool = True,
    resize_policy: str = "crop",
    crop_pct: float = 1.0,
    verify: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> Any:
    """``cls`` (ImageDataLoaders) over the images a CSV lists; see the module docstring."""
    if not (isinstance(valid_pct, (int, float)) and 0 <= valid_pct < 1):
        raise ValueError(f"valid_pct: expected a number in [0, 1), got {valid_pct!r}")
    root = Path(path)
    csv_path = Path(csv_fname) if Path(csv_fname).is_absolute() else root / csv_fname
    base = root / folder if folder else root
    paths, labels, is_valid = read_label_csv(
        csv_path, base, fn_col, label_col, valid_col, delimiter
    )
    config = PreprocessConfig(size, resize_policy, crop_pct, mean, std)
    tfm = None
    if augment:
        options = dict(augment) if isinstance(augment, dict) else {}
        tfm = TrainTransform(config, **{"flip": flip, "max_pixels": max_pixels, **options})
    skipped = []
    if verify:
        min_side = config.decode_min_side if config.draft else None
        skipped = find_bad_images(
            paths, min_side=min_side, max_pixels=max_pixels, num_workers=num_workers
        )
        _report_bad(skipped, strict)
        gone = {b.path for b in skipped}
        keep = [k for k, p in enumerate(paths) if p not in gone]
        paths, labels = [paths[k] for k in keep], [labels[k] for k in keep]
        is_valid = None if is_valid is None else [is_valid[k] for k in keep]
    train_classes = sorted(
        {lab for k, lab in enumerate(labels) if is_valid is None or not is_valid[k]}
    )
    if len(train_classes) < 2:
        raise ValueError(
            f"{csv_path}: the training rows hold {len(train_classes)} class(es); "
            "a classifier needs at least 2"
        )
    index = {c: i for i, c in enumerate(train_classes)}
    if is_valid is not None:
        dropped = sorted({lab for lab in labels if lab not in index})
        if dropped:
            warnings.warn(
                f"{csv_path}: validation label(s) {dropped} have no training rows; "
                "those rows are ignored",
                BadImageWarning,
                stacklevel=3,
            )
        t = [k for k, v in enumerate(is_valid) if not v]
        v = [k for k, ok in enumerate(is_valid) if ok and labels[k] in index]
        y = np.array([index.get(lab, -1) for lab in labels], dtype=np.int64)
    else:
        y = np.array([index[lab] for lab in labels], dtype=np.int64)
        t, v = split_items(y, valid_pct, seed, stratify)
    train_ds = ImageDataset([paths[k] for k in t], y[t], train_classes)
    valid_ds = ImageDataset([paths[k] for k in v], y[v], train_classes)
    return cls(
        train_ds,
        valid_ds,
        config,
        tfm,
        bs=bs,
        seed=seed,
        oversample=oversample,
        strict=strict,
        num_workers=num_workers,
        skipped=skipped,
        path=root,
    )

"""``ImageDataLoaders.from_folder``: a folder of photos -> train/valid batches, as in lesson 2.

Steps, in order: read the layout (layout.py), drop bad files with one warning (verify.py),
split with the seed (stratified by default so no class vanishes from validation), then wrap
each split in an ImageLoader (training: augmentation + seeded shuffling, or oversampling).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fastcore_cv.checks import check_int
from fastcore_cv.vision.augment import TrainTransform
from fastcore_cv.vision.layout import check_enough_classes, read_layout
from fastcore_cv.vision.loader import ImageDataset, ImageLoader
from fastcore_cv.vision.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_PIXELS,
    ImageError,
    PreprocessConfig,
    preprocess,
)
from fastcore_cv.vision.verify import BadImage, BadImageWarning, find_bad_images

log = logging.getLogger("fastcore_cv.vision")


def split_items(
    labels: np.ndarray, valid_pct: float, seed: int | None, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, valid indices), sorted. Stratified: each class gives round(valid_pct *
    n) images (at least 1 and at most n - 1 when it has 2+); else fastai's plain shuffle."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if not stratify:
        perm = rng.permutation(n)
        cut = int(valid_pct * n)
        return np.sort(perm[cut:]), np.sort(perm[:cut])
    valid: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = round(valid_pct * len(members))
        if valid_pct > 0 and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        valid.append(rng.permutation(members)[:k])
    valid_idx = np.sort(np.concatenate(valid)) if valid else np.array([], dtype=np.int64)
    return np.setdiff1d(np.arange(n), valid_idx), valid_idx


class ImageDataLoaders:
    """Train and valid loaders over a folder of photos, with what the lesson shows about them.

    ``classes``: sorted class-folder names (index = label). ``counts``: images per class per
    split; ``oversample_counts``: training images per class before/after oversampling (per
    epoch). ``skipped``: bad files left out. ``preprocess_config``: the validation transform,
    for export.
    """

    def __init__(
        self,
        train_ds: ImageDataset,
        valid_ds: ImageDataset,
        preprocess_config: PreprocessConfig,
        train_transform: TrainTransform | None = None,
        *,
        bs: int = 64,
        seed: int | None = 42,
        oversample: bool = False,
        strict: bool = False,
        num_workers: int = 0,
        skipped: list[BadImage] | None = None,
        path: Path | None = None,
    ) -> None:
        self.path, self.train_ds, self.valid_ds = path, train_ds, valid_ds
        self.classes = list(train_ds.classes)
        self.preprocess_config, self.train_transform = preprocess_config, train_transform
        self.bs, self.seed, self.strict, self.num_workers = bs, seed, strict, num_workers
        self.skipped = list(skipped or [])
        self.counts = {"train": train_ds.counts(), "valid": valid_ds.counts()}
        self.oversample_counts: dict[str, dict[str, int]] | None = None
        train_tfm = (
            self._valid_transform if train_transform is None else _augmenting(train_transform)
        )
        self.train = ImageLoader(
            train_ds, train_tfm, preprocess_config.size, bs, shuffle=True, drop_last=True,
            oversample=oversample, seed=seed, num_workers=num_workers, strict=strict,
        )  # fmt: skip
        self.valid = self.test_dl(valid_ds) if len(valid_ds) else None
        if oversample:
            n, k = len(train_ds), len(self.classes)
            after = {c: round(n / k) for c in self.classes}
            self.oversample_counts = {"before": self.counts["train"], "after": after}
            log.info("oversampling the training set: per class %s -> about %s per epoch",
                     self.counts["train"], after)  # fmt: skip

    @property
    def c(self) -> int:
        """Number of classes (fastai's name)."""
        return len(self.classes)

    def _valid_transform(self, path: Path, rng: np.random.Generator, out: np.ndarray) -> None:
        preprocess(path, self.preprocess_config, out=out)

    def test_dl(
        self, items: ImageDataset | Iterable, bs: int | None = None, *, augment: bool = False
    ) -> ImageLoader:
        """Batches in order over a dataset or paths (labels then -1), for predictions,
        interpretation or caching features. ``augment=True``: the training transform (each
        iteration is a new seeded epoch: K passes give K augmented views of every image)."""
        if not isinstance(items, ImageDataset):
            paths = list(items)
            items = ImageDataset(paths, [-1] * len(paths), self.classes)
        tfm = self._valid_transform
        if augment and self.train_transform is not None:
            tfm = _augmenting(self.train_transform)
        return ImageLoader(
            items, tfm, self.preprocess_config.size, bs or self.bs,
            seed=self.seed, num_workers=self.num_workers, strict=self.strict,
        )  # fmt: skip

    def one_batch(self):
        """One training batch (advances the training loader's epoch)."""
        return self.train.one_batch()

    def __repr__(self) -> str:
        width = max([len(c) for c in self.classes] + [5])
        lines = [f"ImageDataLoaders({self.path}): {self.c} classes, bs={self.bs}"]
        lines.append(f"  {'class':<{width}}  {'train':>6}  {'valid':>6}")
        for c in self.classes:
            lines.append(
                f"  {c:<{width}}  {self.counts['train'][c]:>6}  {self.counts['valid'][c]:>6}"
            )
        if self.oversample_counts:
            lines.append(f"  oversampled per epoch: {self.oversample_counts['after']}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} bad file(s)")
        return "\n".join(lines)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        valid_pct: float = 0.2,
        seed: int | None = 42,
        size: int | tuple[int, int] = 224,
        bs: int = 64,
        train: str = "train",
        valid: str = "valid",
        stratify: bool = True,
        oversample: bool = False,
        augment: bool | dict[str, Any] = True,
        strict: bool = False,
        num_workers: int = 0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        *,
        flip: bool = True,
        resize_policy: str = "crop",
        crop_pct: float = 1.0,
        verify: bool = True,
        max_pixels: int = MAX_PIXELS,
    ) -> ImageDataLoaders:
        """Classes from folder names; ``path/<class>/`` split by ``valid_pct`` with ``seed``,
        or ``path/train/<class>/`` + ``path/valid/<class>/`` used as given.

        ``augment``: True, False, or TrainTransform options (scale, ratio, brightness,
        contrast). ``flip=False`` for classes a mirror changes (digits). ``verify``: decode
        every file once up front so bad ones are skipped with ONE warning (``strict=True``
        raises instead). ``num_workers``: decoding threads (0 = in the calling thread).
        """
        if not (isinstance(valid_pct, (int, float)) and 0 <= valid_pct < 1):
            raise ValueError(f"valid_pct: expected a number in [0, 1), got {valid_pct!r}")
        for name, value, low in (("bs", bs, 1), ("num_workers", num_workers, 0)):
            check_int(value, name, low)
        config = PreprocessConfig(size, resize_policy, crop_pct, mean, std)
        tfm = None
        if augment:
            options = dict(augment) if isinstance(augment, dict) else {}
            tfm = TrainTransform(config, **{"flip": flip, "max_pixels": max_pixels, **options})
        layout = read_layout(path, train, valid)
        pools = [layout.train] + ([layout.valid] if layout.valid is not None else [])
        skipped: list[BadImage] = []
        if verify:
            files = [p for pool in pools for files in pool.values() for p in files]
            min_side = config.decode_min_side if config.draft else None
            skipped = find_bad_images(files, min_side=min_side, max_pixels=max_pixels,
                                      num_workers=num_workers)  # fmt: skip
            _report_bad(skipped, strict)
            gone = {b.path for b in skipped}
            for pool in pools:
                for c in list(pool):
                    pool[c] = [p for p in pool[c] if p not in gone]
                    if not pool[c]:
                        warnings.warn(f"class {c!r}: every image is bad; class dropped",
                                      BadImageWarning, stacklevel=2)  # fmt: skip
                        del pool[c]
            check_enough_classes(layout.train, layout.root, layout.expected)
        classes = sorted(layout.train)
        index = {c: i for i, c in enumerate(classes)}
        items, labels = _flatten(layout.train, index)
        if layout.valid is not None:
            train_ds = ImageDataset(items, labels, classes)
            valid_ds = ImageDataset(*_flatten(layout.valid, index), classes)
        else:
            t, v = split_items(labels, valid_pct, seed, stratify)
            train_ds = ImageDataset([items[i] for i in t], labels[t], classes)
            valid_ds = ImageDataset([items[i] for i in v], labels[v], classes)
        missing = [c for c, n in valid_ds.counts().items() if n == 0]
        if missing and (layout.valid is not None or valid_pct > 0):
            warnings.warn(f"no validation images for class(es) {missing}", stacklevel=2)
        dls = cls(
            train_ds, valid_ds, config, tfm, bs=bs, seed=seed, oversample=oversample,
            strict=strict, num_workers=num_workers, skipped=skipped, path=layout.root,
        )  # fmt: skip
        log.info("%s", dls)
        return dls

    @classmethod
    def from_csv(
        cls, path: str | os.PathLike, csv_fname: str | os.PathLike = "labels.csv", **kwargs: Any
    ) -> ImageDataLoaders:
        """Images and labels listed in a CSV under ``path`` (e.g. ``cleaned.csv`` from
        ``fastcore-cv clean``); options as ``from_folder`` plus fn_col, label_col, valid_col,
        folder, delimiter (vision/csv_data.py)."""
        from fastcore_cv.vision.csv_data import from_csv

        return from_csv(cls, path, csv_fname, **kwargs)


def _augmenting(tfm: TrainTransform):
    def transform(path: Path, rng: np.random.Generator, out: np.ndarray) -> None:
        tfm(path, rng, out=out)

    return transform


def _flatten(pool: dict[str, list[Path]], index: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    items = [p for c in sorted(pool) for p in pool[c]]
    labels = np.array([index[c] for c in sorted(pool) for _ in pool[c]], dtype=np.int64)
    return items, labels


def _report_bad(bad: list[BadImage], strict: bool) -> None:
    """ONE warning naming every bad file (the first 20 in full), or raise when strict."""
    if not bad:
        return
    if strict:
        first = bad[0]
        more = f"; {len(bad) - 1} more bad file(s)" if len(bad) > 1 else ""
        raise ImageError(str(first.path), first.reason, first.detail + more)
    shown = "; ".join(str(b) for b in bad[:20])
    more = f"; and {len(bad) - 20} more (see dls.skipped)" if len(bad) > 20 else ""
    warnings.warn(
        f"skipped {len(bad)} bad image file(s): {shown}{more}", BadImageWarning, stacklevel=3
    )

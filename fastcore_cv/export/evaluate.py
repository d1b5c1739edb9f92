"""Evaluate an exported model on a labelled class folder: accuracy, per-class precision and
recall, the confusion matrix and its most confused pairs, as text and as a JSON report.

Torch-free (it runs in the inference-only install): the images are scored by the batch path
(export/batch.py) and the metrics are NumPy counts. The metric functions take plain label
arrays, so the same code checks any classifier's answers.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcore_cv.export.batch import BATCH_SIZE, score_files
from fastcore_cv.output_files import atomic_path
from fastcore_cv.progress import Progress
from fastcore_cv.vision.layout import class_folders

if TYPE_CHECKING:
    from fastcore_cv.export.predictor import Predictor


def confusion_matrix(actual: Any, predicted: Any, n_classes: int) -> np.ndarray:
    """Counts ``cm[actual, predicted]`` as an int64 (C, C) array from two index arrays."""
    a, p = np.asarray(actual), np.asarray(predicted)
    if a.shape != p.shape or a.ndim != 1:
        raise ValueError(f"actual, predicted: expected two 1-D arrays of one length, got "
                         f"shapes {a.shape} and {p.shape}")  # fmt: skip
    for name, v in (("actual", a), ("predicted", p)):
        if v.size and (v.dtype.kind not in "iu" or v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name}: expected class indices in [0, {n_classes})")
    flat = a.astype(np.int64) * n_classes + p.astype(np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class ClassScore:
    """One class's precision (right / predicted as it), recall (right / actually it), F1 and
    support (images of it). 0/0 is NaN ("unknown"), never a score of 0."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


def class_scores(cm: np.ndarray, classes: list[str]) -> list[ClassScore]:
    """Per-class precision, recall, F1 = 2TP / (2TP + FP + FN) from a confusion matrix."""
    cm = np.asarray(cm, np.float64)
    right, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    out = []
    for c, name in enumerate(classes):
        wrong = predicted[c] + actual[c] - 2 * right[c]  # FP + FN
        out.append(ClassScore(
            name,
            right[c] / predicted[c] if predicted[c] else math.nan,
            right[c] / actual[c] if actual[c] else math.nan,
            2 * right[c] / (2 * right[c] + wrong) if right[c] + wrong else math.nan,
            int(actual[c]),
        ))  # fmt: skip
    return out


def most_confused(
    cm: np.ndarray, classes: list[str], min_count: int = 1
) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) for every off-diagonal cell >= ``min_count``, most first
    (ties by name), as ``ClassificationInterpretation.most_confused``."""
    pairs = [
        (classes[a], classes[p], int(cm[a, p]))
        for a in range(len(classes))
        for p in range(len(classes))
        if a != p and cm[a, p] >= min_count
    ]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


@dataclass
class Evaluation:
    """A model's answers on a labelled folder, counted. ``unreadable``: (path, why) of the
    files that could not be decoded; they are left out of every metric and listed."""

    model: Path
    folder: Path
    classes: list[str]
    confusion: np.ndarray
    mistakes: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    threshold: float = 0.0  # answers below it are "not sure" (export/calibration.py)
    accepted: int = 0  # answers at or above the threshold
    accepted_right: int = 0  # ... that were right

    @property
    def coverage(self) -> float:
        """Share of the scored images answered with confidence (not "not sure")."""
        return self.accepted / self.images if self.images else math.nan

    @property
    def accepted_accuracy(self) -> float:
        """Accuracy on the accepted images only (NaN when none was accepted)."""
        return self.accepted_right / self.accepted if self.accepted else math.nan

    @property
    def images(self) -> int:
        """Images scored (unreadable ones not counted)."""
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.images) if self.images else math.nan

    @property
    def error_rate(self) -> float:
        return 1.0 - self.accuracy

    def class_scores(self) -> list[ClassScore]:
        return class_scores(self.confusion, self.classes)

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        return most_confused(self.confusion, self.classes, min_count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN becomes null): every figure the text shows, plus the mistakes."""
        return _json_safe({
            "model": str(self.model),
            "folder": str(self.folder),
            "images": self.images,
            "accuracy": self.accuracy,
            "error_rate": self.error_rate,
            "threshold": self.threshold,
            "coverage": self.coverage,
            "accepted_accuracy": self.accepted_accuracy,
            "classes": self.classes,
            "per_class": [vars(s) for s in self.class_scores()],
            "confusion_matrix": self.confusion.tolist(),
            "most_confused": [
                {"actual": a, "predicted": p, "count": n} for a, p, n in self.most_confused()
            ],
            "mistakes": self.mistakes,
            "unreadable": [{"path": p, "error": e} for p, e in self.unreadable],
            "seconds": round(self.seconds, 3),
        })  # fmt: skip

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict`` to ``path`` atomically (no half-written report)."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return Path(path)

    def text(self, top: int = 5) -> str:
        """The report as aligned text: accuracy, per-class table, matrix, most confused."""
        w = max([len(c) for c in self.classes] + [5])
        skipped = f" ({len(self.unreadable)} unreadable, left out)" if self.unreadable else ""
        lines = [
            f"{self.model.name} on {self.folder}: {self.images} images{skipped} in "
            f"{self.seconds:.1f} s",
            f"accuracy {self.accuracy:.4f}  error rate {self.error_rate:.4f}",
            f"sure (probability >= {self.threshold:.4g}): {self.accepted}/{self.images} = "
            f"{self.coverage:.1%} coverage, accuracy on them {self.accepted_accuracy:.4f}",
            "",
            f"{'class':<{w}}  precision  recall     f1  support",
        ]
        for s in self.class_scores():
            lines.append(f"{s.name:<{w}}  {s.precision:9.3f}  {s.recall:6.3f}  {s.f1:5.3f}"
                         f"  {s.support:7d}")  # fmt: skip
        cw = max([len(str(int(self.confusion.max(initial=0)))), *map(len, self.classes)])
        lines += ["", "confusion matrix (rows: actual, columns: predicted)"]
        lines.append(" " * w + "".join(f"  {c:>{cw}}" for c in self.classes))
        for name, row in zip(self.classes, self.confusion, strict=True):
            lines.append(f"{name:<{w}}" + "".join(f"  {int(v):>{cw}}" for v in row))
        pairs = self.most_confused()[:top]
        if pairs:
            shown = ", ".join(f"{a} -> {p} ({n})" for a, p, n in pairs)
            lines += ["", f"most confused (actual -> predicted): {shown}"]
        for path, why in self.unreadable[:top]:
            lines.append(f"unreadable: {path}: {why}")
        if len(self.unreadable) > top:
            lines.append(f"... and {len(self.unreadable) - top} more unreadable (see the report)")
        return "\n".join(lines)


def labelled_files(folder: str | os.PathLike, classes: list[str]) -> tuple[Path, list, list]:
    """(root, files, class indices) of ``folder``/<class>/<image> (or its ``valid/`` when it
    holds train/ and valid/). A class folder the model does not know is an error naming it."""
    root = Path(folder).expanduser()
    if (root / "train").is_dir() and (root / "valid").is_dir():
        root = root / "valid"
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise ValueError(f"folder: {root} {what}; expected {root}/<class>/<image>")
    found = class_folders(root, f"{root}/<class>/<image>", min_classes=1)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"folder: {root} has class folder(s) {unknown} the model does not "
                         f"know; its classes are {classes}")  # fmt: skip
    index = {c: i for i, c in enumerate(classes)}
    pairs = sorted((p, index[c]) for c, files in found.items() for p in files)
    return root, [p for p, _ in pairs], [t for _, t in pairs]


def evaluate(
    predictor: Predictor,
    folder: str | os.PathLike,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    progress: str = "auto",
    threshold: float | None = None,
) -> Evaluation:
    """Score every image of the labelled ``folder`` with ``predictor`` and count the answers.
    ``threshold``: as ``Predictor.predict`` (None: the file's calibrated one)."""
    start = time.perf_counter()
    classes = list(predictor.classes)
    root, files, targets = labelled_files(folder, classes)
    actual, predicted, mistakes, unreadable = [], [], [], []
    accepted = accepted_right = 0
    used = predictor.threshold if threshold is None else threshold
    with Progress(len(files), "evaluate", progress, unit="images") as bar:
        scored = score_files(
            predictor, files, batch_size=batch_size, workers=workers, threshold=threshold
        )
        for s, target in zip(scored, targets, strict=True):
            bar.update()
            if s.prediction is None:
                unreadable.append((str(s.path), s.error_text))
                continue
            actual.append(target)
            predicted.append(s.prediction.index)
            if s.prediction.accepted:
                accepted += 1
                accepted_right += s.prediction.index == target
            if s.prediction.index != target:
                mistakes.append({"path": str(s.path), "actual": classes[target],
                                 "predicted": s.prediction.label,
                                 "probability": s.prediction.probability})  # fmt: skip
    if not actual:
        raise ValueError(f"folder: none of the {len(files)} image(s) in {root} could be read "
                         f"(first: {unreadable[0][0]}: {unreadable[0][1]})")  # fmt: skip
    cm = confusion_matrix(np.array(actual), np.array(predicted), len(classes))
    return Evaluation(
        predictor.path, root, classes, cm, mistakes, unreadable, time.perf_counter() - start,
        float(used), accepted, int(accepted_right),
    )  # fmt: skip


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value

"""What the model gets wrong: confusion matrix, most-confused pairs, top losses, per-class report.

``ClassificationInterpretation.from_learner(learn)`` runs the model over the validation set
ONCE and keeps probabilities, targets, per-item losses and predictions; every method after
that only reads them (fastai re-runs inference on many calls, a known complaint). Plots are
written as PNG through matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from fastcore_cv.checks import check_int
from fastcore_cv.learner.metrics import confusion_matrix
from fastcore_cv.learner.plots import save_figure
from fastcore_cv.learner.step import collect


@dataclass(frozen=True)
class TopLoss:
    """One validation item the model did worst on."""

    index: int  # position in the validation set
    loss: float
    actual: str
    predicted: str
    prob_predicted: float
    prob_actual: float
    item: Any = None  # the image path when known


@dataclass(frozen=True)
class ClassReport:
    """Precision, recall, F1 and support of one class (NaN where undefined: 0/0)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationInterpretation:
    """Validation predictions computed once, read many ways.

    ``probs`` (N, C) softmax probabilities, ``targets`` (N,), ``preds`` (N,) argmax,
    ``losses`` (N,) cross-entropy per item, ``items`` the image paths (or None).
    """

    def __init__(
        self,
        probs: torch.Tensor,
        targets: torch.Tensor,
        classes: list[str],
        items: list[Any] | None = None,
    ) -> None:
        probs, targets = torch.as_tensor(probs).float(), torch.as_tensor(targets).long()
        if probs.ndim != 2 or len(probs) != len(targets):
            raise ValueError(
                f"probs: expected (N, C) for {len(targets)} targets, got {tuple(probs.shape)}"
            )
        if len(probs) == 0:
            raise ValueError("probs: no predictions (empty validation set?)")
        if len(classes) != probs.shape[1]:
            raise ValueError(f"classes: {len(classes)} names for {probs.shape[1]} model outputs")
        if items is not None and len(items) != len(targets):
            items = None  # cannot be matched to the predictions: plot without images
        self.probs, self.targets, self.classes, self.items = probs, targets, list(classes), items
        self.preds = probs.argmax(dim=1)
        picked = probs.gather(1, targets[:, None]).squeeze(1)
        self.losses = -torch.log(picked.clamp_min(1e-45))

    @classmethod
    def from_learner(cls, learn: Any) -> ClassificationInterpretation:
        """Run ``learn``'s model (eval mode) over its validation set once."""
        dls = getattr(learn, "source_dls", learn.dls)
        if learn.dls.valid is None:
            raise ValueError("learn: has no validation set to interpret")
        classes = list(getattr(dls, "classes", None) or [])
        cache = getattr(learn, "feature_cache", None)
        if getattr(learn, "frozen", False) and cache is not None and cache.valid_x is not None:
            head = learn.model.head  # same numbers as the full model: body features cached
            head.eval()
            with torch.no_grad():
                logits, targets = head(cache.valid_x), cache.valid_y
        else:
            logits, targets, _, count = collect(
                learn.model, learn.loss_func, learn.dls.valid, "validation"
            )
            if count == 0:
                raise ValueError("learn: the validation set has no batches")
        if not classes:
            classes = [str(i) for i in range(logits.shape[1])]
        return cls(F.softmax(logits.float(), dim=1), targets, classes, _valid_items(dls))

    # -- counting --------------------------------------------------------------------
    def confusion_matrix(self) -> np.ndarray:
        """Counts ``cm[actual, predicted]`` (C, C)."""
        return confusion_matrix(self.probs, self.targets, len(self.classes))

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) for every off-diagonal cell >= ``min_val``, most first."""
        cm = self.confusion_matrix()
        pairs = [
            (self.classes[a], self.classes[p], int(cm[a, p]))
            for a in range(len(cm))
            for p in range(len(cm))
            if a != p and cm[a, p] >= min_val
        ]
        return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))

    def top_losses(self, k: int | None = None) -> list[TopLoss]:
        """The ``k`` items with the highest loss (all items when None), worst first."""
        n = len(self.losses)
        k = n if k is None else k
        check_int(k, "k")
        order = torch.argsort(self.losses, descending=True, stable=True)[: min(k, n)]
        out = []
        for i in order.tolist():
            a, p = int(self.targets[i]), int(self.preds[i])
            out.append(TopLoss(
                i, float(self.losses[i]), self.classes[a], self.classes[p],
                float(self.probs[i, p]), float(self.probs[i, a]),
                None if self.items is None else self.items[i],
            ))  # fmt: skip
        return out

    def report(self) -> list[ClassReport]:
        """Per-class precision (right / predicted as it), recall (right / actually it) and F1 =
        2TP / (2TP + FP + FN) (0 for a class never predicted right, as scikit-learn)."""
        cm = self.confusion_matrix().astype(np.float64)
        right, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
        rows = []
        for c, name in enumerate(self.classes):
            prec = right[c] / predicted[c] if predicted[c] else math.nan
            rec = right[c] / actual[c] if actual[c] else math.nan
            wrong = predicted[c] + actual[c] - 2 * right[c]  # FP + FN
            f1 = 2 * right[c] / (2 * right[c] + wrong) if right[c] + wrong else math.nan
            rows.append(ClassReport(name, prec, rec, f1, int(actual[c])))
        return rows

    def report_text(self) -> str:
        """The per-class report as an aligned table, with the accuracy at the end."""
        w = max([len(c) for c in self.classes] + [5])
        lines = [f"{'class':<{w}}  precision  recall     f1  support"]
        for r in self.report():
            lines.append(f"{r.name:<{w}}  {r.precision:9.3f}  {r.recall:6.3f}  {r.f1:5.3f}"
                         f"  {r.support:7d}")  # fmt: skip
        acc = float((self.preds == self.targets).float().mean())
        lines.append(f"accuracy {acc:.4f} ({len(self.targets)} items, error_rate {1 - acc:.4f})")
        return "\n".join(lines)

    # -- plots -----------------------------------------------------------------------
    def plot_confusion_matrix(self, path: str | Path, normalize: bool = False) -> Path:
        """The confusion matrix as a labelled heat map with the count in every cell."""
        cm = self.confusion_matrix()
        shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
        c = len(self.classes)
        side = max(4.0, 0.5 * c + 2)
        fig = Figure(figsize=(side, side))
        ax = fig.add_subplot()
        ax.imshow(shown, cmap="Blues")
        ax.set_xticks(range(c), self.classes, rotation=90 if c > 6 else 0)
        ax.set_yticks(range(c), self.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
        top = shown.max() if shown.size else 0
        for a in range(c):
            for p in range(c):
                v = shown[a, p]
                text = f"{v:.2f}" if normalize else str(int(v))
                ax.text(p, a, text, ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")  # fmt: skip
        return save_figure(fig, path)

    def plot_top_losses(self, k: int, path: str | Path, ncols: int = 4) -> Path:
        """A grid of the ``k`` worst items: image, predicted / actual, loss, probabilities."""
        rows = self.top_losses(k)
        ncols = max(1, min(ncols, len(rows)))
        nrows = math.ceil(len(rows) / ncols)
        fig = Figure(figsize=(2.6 * ncols, 3.2 * nrows + 0.4))
        fig.suptitle("prediction / actual / loss / probability of the prediction")
        for j, r in enumerate(rows):
            ax = fig.add_subplot(nrows, ncols, j + 1)
            img = _thumbnail(r.item)
            if img is not None:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{r.predicted} / {r.actual}\nloss {r.loss:.2f} / p {r.prob_predicted:.2f}"
            color = "darkred" if r.predicted != r.actual else "black"
            ax.set_title(title, fontsize=9, color=color)
        return save_figure(fig, path)

    def __repr__(self) -> str:
        err = float((self.preds != self.targets).float().mean())
        return (
            f"ClassificationInterpretation({len(self.targets)} items, {len(self.classes)} "
            f"classes, error_rate {err:.4f})"
        )

    def _repr_html_(self) -> str:
        """Confusion matrix, top losses and the report inline in a notebook (display.py)."""
        from fastcore_cv.display import interpretation_html

        return interpretation_html(self)


def _valid_items(dls: Any) -> list[Any] | None:
    """The validation image paths in loader order, minus files the loader skipped as bad."""
    ds = getattr(dls, "valid_ds", None)
    if ds is None or not hasattr(ds, "items"):
        return None
    skipped = {b.path for b in getattr(getattr(dls, "valid", None), "skipped", [])}
    return [p for p in ds.items if p not in skipped]


def _thumbnail(item: Any, side: int = 256) -> np.ndarray | None:
    """The image at ``item`` as RGB pixels (shrunk to ``side``), or None when unreadable."""
    if item is None:
        return None
    from fastcore_cv.vision.decode import ImageError, load_image

    try:
        img = load_image(item, min_side=side)
    except ImageError:
        return None
    img.thumbnail((side, side))
    return np.asarray(img)

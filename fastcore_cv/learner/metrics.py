"""Classification metrics over a whole validation set: accuracy, error rate, per-class P/R.

A metric is any ``f(preds, targets) -> float`` where ``preds`` are the model's outputs
(logits or probabilities, shape (N, C)) and ``targets`` class indices (N,). The Learner calls
it once per epoch on the concatenated validation outputs, so the value is exact, not an
average of per-batch values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _pair(preds: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    preds, targets = torch.as_tensor(preds), torch.as_tensor(targets)
    if preds.ndim != 2:
        raise ValueError(f"preds: expected (N, C) scores, got shape {tuple(preds.shape)}")
    if targets.ndim != 1 or targets.shape[0] != preds.shape[0]:
        raise ValueError(
            f"targets: expected {preds.shape[0]} class indices, got shape {tuple(targets.shape)}"
        )
    if preds.shape[0] == 0:
        raise ValueError("preds: no predictions (empty validation set?)")
    return preds, targets.long()


def accuracy(preds: Any, targets: Any) -> float:
    """Fraction of items whose highest-scoring class is the target."""
    preds, targets = _pair(preds, targets)
    return float((preds.argmax(dim=1) == targets).float().mean())


def error_rate(preds: Any, targets: Any) -> float:
    """1 - accuracy: the fraction of items the model gets wrong."""
    return 1.0 - accuracy(preds, targets)


def confusion_matrix(preds: Any, targets: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts ``cm[actual, predicted]`` as an int64 (C, C) array."""
    preds, targets = _pair(preds, targets)
    c = num_classes if num_classes is not None else preds.shape[1]
    if targets.min() < 0 or targets.max() >= c:
        raise ValueError(f"targets: class indices must lie in [0, {c})")
    flat = targets * c + preds.argmax(dim=1)
    return torch.bincount(flat, minlength=c * c).reshape(c, c).numpy().astype(np.int64)


def precision_recall(
    preds: Any, targets: Any, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (right / predicted as the class) and recall (right / actually the class).

    A class never predicted has precision NaN; a class absent from the targets has recall NaN
    (0/0 is "unknown", not 0: it must not look like a bad score).
    """
    cm = confusion_matrix(preds, targets, num_classes).astype(np.float64)
    right = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return right / cm.sum(axis=0), right / cm.sum(axis=1)


def metric_name(metric: Any) -> str:
    """The column name for a metric: its ``name`` attribute, or its function's name."""
    name = getattr(metric, "name", None) or getattr(metric, "__name__", None)
    func = getattr(metric, "func", None)  # functools.partial
    if name is None and func is not None:
        name = getattr(func, "__name__", None)
    return name or type(metric).__name__

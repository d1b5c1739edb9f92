"""An honest "I don't know": temperature scaling and a confidence threshold, torch-free.

At export, one scalar temperature T is fitted on the validation outputs (the T that
minimises the negative log-likelihood of softmax(z / T), in float64), then the smallest
confidence threshold whose accepted validation images reach a target accuracy. Both ride in
the file's metadata (export/metadata.py); the Predictor applies T to every output and flags
answers below the threshold as not accepted ("not sure"). The same ``probabilities``
function serves the export and the Predictor, so the threshold holds on the very numbers
the Predictor computes.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastcore_cv.vision.layout import read_layout
from fastcore_cv.vision.preprocessing import ImageSource

TARGET_ACCURACY = 0.99  # accuracy wanted on the accepted validation images
ECE_BINS = 15  # equal-width confidence bins of the expected calibration error
BETA_RANGE = (1e-3, 1e3)  # 1/T searched in this range (log scale)
_BISECTIONS = 200  # halvings of the log range: far below float64 resolution of log(1/T)


def log_probabilities(out: np.ndarray, output: str) -> np.ndarray:
    """The graph's outputs as log-probabilities up to a per-row constant, float64:
    logits as they are; probabilities through log (log 0 = -inf stays -inf)."""
    z = np.asarray(out, np.float64)
    if output == "logits":
        return z
    with np.errstate(divide="ignore"):
        return np.log(z)


def probabilities(out: np.ndarray, output: str, temperature: float = 1.0) -> np.ndarray:
    """softmax(log p / T) of the graph's outputs (N, C), in the outputs' dtype. Scaling the
    log-probabilities by 1/T equals scaling the logits: the per-row constant cancels."""
    if temperature == 1.0 and output == "probabilities":
        return out
    z = log_probabilities(out, output) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.result_type(out.dtype, np.float32), copy=False)


def nll(z: np.ndarray, labels: np.ndarray, beta: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(beta * z) at ``labels``, float64."""
    s = beta * np.asarray(z, np.float64)
    finite = np.where(np.isfinite(s), s, -np.inf)
    m = finite.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(finite - m).sum(axis=1))
    return float(np.mean(lse - finite[np.arange(len(z)), labels]))


def _nll_slope(z: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d beta = mean(E_p[z] - z_label), increasing in beta (NLL is convex in beta)."""
    s = beta * z
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    zf = np.where(np.isfinite(z), z, 0.0)  # p is 0 where z = -inf
    return float(np.mean((p * zf).sum(axis=1) - zf[np.arange(len(z)), labels]))


def fit_temperature(out: np.ndarray, labels: np.ndarray, output: str = "logits") -> float:
    """The T > 0 minimising the NLL of softmax(z / T) (z: logits or log-probabilities).

    NLL is convex in beta = 1/T, so its slope is increasing: bisection of the slope's sign on
    log beta in ``BETA_RANGE`` finds the minimum to float64 resolution. A validation set that
    is all correct and separable has no minimum (sharper is always better: T -> 0); that
    says the set is too easy or too small to tell, not that the model is never wrong, so T
    stays 1 (the outputs as trained). Worse than uniform everywhere: T = 1 / BETA_RANGE[0]."""
    z = log_probabilities(out, output)
    labels = np.asarray(labels, np.int64)
    if z.ndim != 2 or len(z) != len(labels) or len(z) == 0:
        raise ValueError(f"out: expected (N, C) outputs for N labels, got {z.shape}, {len(labels)}")
    if labels.min() < 0 or labels.max() >= z.shape[1]:
        raise ValueError(f"labels: expected class indices in [0, {z.shape[1]}), got {labels}")
    lo, hi = (math.log(b) for b in BETA_RANGE)
    if _nll_slope(z, labels, math.exp(lo)) >= 0:
        return 1.0 / BETA_RANGE[0]
    if _nll_slope(z, labels, math.exp(hi)) <= 0:
        return 1.0
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if _nll_slope(z, labels, math.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return 1.0 / math.exp(0.5 * (lo + hi))


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The smallest threshold t among the confidences such that the images with confidence
    >= t are right at least ``target`` of the time (the most coverage at that accuracy).
    None reaches it (the most confident image is wrong): just above the largest confidence,
    so that nothing is accepted."""
    conf = np.asarray(confidence, np.float64)
    right = np.asarray(correct, bool)
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    accuracy = np.cumsum(right) / np.arange(1, len(conf) + 1)
    # Accepting ``conf >= c`` takes every tie of c: evaluate only at the last of each tie.
    last = np.r_[conf[1:] != conf[:-1], True]
    ok = last & (accuracy >= target)
    if not ok.any():
        return float(np.nextafter(conf[0], np.inf)) if len(conf) else 1.0
    return float(conf[np.flatnonzero(ok)[-1]])


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the mean over equal-width confidence bins of
    |accuracy - mean confidence|, weighted by the bins' share of images."""
    probs = np.asarray(probs, np.float64)
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(which):
        m = which == b
        total += m.sum() * abs(right[m].mean() - conf[m].mean())
    return float(total / len(conf))


def calibrate(
    out: np.ndarray, labels: np.ndarray, output: str, target: float = TARGET_ACCURACY
) -> dict[str, float | int | None]:
    """Temperature, threshold and what they give on these validation outputs (JSON-able)."""
    target = check_target(target)
    labels = np.asarray(labels, np.int64)
    t = fit_temperature(out, labels, output)
    before, after = probabilities(out, output), probabilities(out, output, t)
    conf, right = after.max(axis=1), after.argmax(axis=1) == labels
    threshold = choose_threshold(conf, right, target)
    accepted = conf >= threshold
    z = log_probabilities(out, output)
    return {
        "temperature": t,
        "threshold": threshold,
        "target_accuracy": target,
        "valid_images": len(labels),
        "accuracy": float(right.mean()),
        "coverage": float(accepted.mean()),
        "accuracy_accepted": float(right[accepted].mean()) if accepted.any() else None,
        "ece_before": ece(before, labels),
        "ece_after": ece(after, labels),
        "nll_before": nll(z, labels),
        "nll_after": nll(z, labels, 1.0 / t),
    }


def check_target(target: object) -> float:
    """``target_accuracy`` as a float in (0, 1], else ValueError naming it."""
    if not (isinstance(target, float | int) and not isinstance(target, bool) and 0 < target <= 1):
        raise ValueError(f"target_accuracy: expected a number in (0, 1], got {target!r}")
    return float(target)


def describe(summary: dict[str, Any]) -> str:
    """One line: temperature, threshold, coverage and accuracy on the accepted images."""
    acc = summary.get("accuracy_accepted", math.nan)
    acc_text = "-" if acc is None or not math.isfinite(acc) else f"{acc:.1%}"
    return (
        f"temperature {summary['temperature']:.3g}, threshold {summary['threshold']:.4f} for "
        f"{summary['target_accuracy']:.1%} accuracy: accepts {summary['coverage']:.1%} of "
        f"{summary['valid_images']} validation images, {acc_text} right "
        f"(all: {summary['accuracy']:.1%}); ECE {summary['ece_before']:.3f} -> "
        f"{summary['ece_after']:.3f}"
    )


def labelled_set(valid: Any, classes: Sequence[str]) -> tuple[list[ImageSource], list[int], int]:
    """(images, class indices into ``classes``, images left out as of unknown class) from a
    folder of class folders (its ``valid/`` split when it has one), an ImageDataLoaders (its
    validation set) or (image, class name) pairs."""
    if valid is None:
        return [], [], 0
    if isinstance(valid, str | os.PathLike):
        layout = read_layout(valid)
        pool = layout.valid if layout.valid is not None else layout.train
        pairs = [(p, c) for c, files in sorted(pool.items()) for p in files]
    elif getattr(valid, "valid_ds", None) is not None:
        ds = valid.valid_ds
        pairs = [(p, ds.classes[int(i)]) for p, i in zip(ds.items, ds.labels, strict=True)]
    else:
        pairs = list(valid)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(c) for _, c in pairs if c not in index})
    if unknown:
        warnings.warn(f"valid: class(es) {unknown} are not the model's; left out", stacklevel=3)
    kept = [(p, index[c]) for p, c in pairs if c in index]
    return [p for p, _ in kept], [i for _, i in kept], len(pairs) - len(kept)

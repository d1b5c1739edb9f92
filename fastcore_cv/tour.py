"""The kernel tour behind ``fastcore-cv demo``: each lesson-2 idea as a kernel, checked against a
float64 NumPy reference and timed against NumPy and torch in the same run.

It prints one table; the numbers are medians of a few repeats on whatever machine runs it,
so read the ratio columns, not the absolute times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastcore_cv import kernels


@dataclass
class Row:
    """One line of the tour: what the kernel computes, how exact and how fast it is."""

    idea: str
    case: str
    max_rel_error: float
    ours_s: float
    numpy_s: float | None
    torch_s: float | None


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` after one untimed call (compile, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest error relative to the reference's largest magnitude (0 for exact)."""
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref)) / scale)


def _rows(quick: bool) -> list[Row]:
    import torch

    rng = np.random.default_rng(0)
    reps = 5 if quick else 20
    n_dot, n_mm = (100_000, 256) if quick else (10_000_000, 512)
    rows = []

    # Dot product: "summing up a bunch of things multiplied together".
    x, y = rng.standard_normal((2, n_dot), dtype=np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    ref = np.dot(x.astype(np.float64), y.astype(np.float64))
    rows.append(
        Row(
            "dot product  sum_i x_i*y_i",
            f"n={n_dot:,}",
            rel_error(np.array(kernels.dot(x, y)), np.array(ref)),
            median_seconds(lambda: kernels.dot(x, y), reps),
            median_seconds(lambda: np.dot(x, y), reps),
            median_seconds(lambda: torch.dot(tx, ty), reps),
        )
    )

    # Matrix product: every output is one dot product of a row and a column (y = X a).
    a, b = rng.standard_normal((2, n_mm, n_mm), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rows.append(
        Row(
            "matrix product  Y = X A",
            f"{n_mm}x{n_mm} @ {n_mm}x{n_mm}",
            rel_error(kernels.matmul(a, b), a.astype(np.float64) @ b.astype(np.float64)),
            median_seconds(lambda: kernels.matmul(a, b), reps),
            median_seconds(lambda: a @ b, reps),
            median_seconds(lambda: ta @ tb, reps),
        )
    )

    # A linear layer as torch stores it: relu(x @ w.T + b), the MLP's building block.
    xb = rng.standard_normal((64, 784), dtype=np.float32)
    w = rng.standard_normal((256, 784), dtype=np.float32) * 0.05
    bias = rng.standard_normal(256, dtype=np.float32)
    txb, tw, tbias = map(torch.from_numpy, (xb, w, bias))
    lin_ref = np.maximum(xb.astype(np.float64) @ w.T.astype(np.float64) + bias, 0)
    rows.append(
        Row(
            "linear layer  relu(x W^T + b)",
            "64x784 -> 256",
            rel_error(kernels.linear(xb, w, bias, activation="relu"), lin_ref),
            median_seconds(lambda: kernels.linear(xb, w, bias, activation="relu"), reps),
            median_seconds(lambda: np.maximum(xb @ w.T + bias, 0), reps),
            median_seconds(lambda: torch.relu(torch.nn.functional.linear(txb, tw, tbias)), reps),
        )
    )

    # Softmax cross-entropy: probabilities from scores, loss, and its gradient in one pass.
    logits = rng.standard_normal((256, 100), dtype=np.float32) * 3
    target = rng.integers(0, 100, 256)
    lg64 = logits.astype(np.float64)
    logp = lg64 - lg64.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    loss_ref = -logp[np.arange(256), target].mean()
    tl, tt = torch.from_numpy(logits), torch.from_numpy(target)

    def torch_ce() -> None:
        t = tl.clone().requires_grad_()
        torch.nn.functional.cross_entropy(t, tt).backward()

    rows.append(
        Row(
            "softmax cross-entropy + grad",
            "256 x 100 classes",
            rel_error(
                np.array(kernels.softmax_cross_entropy(logits, target)[0]), np.array(loss_ref)
            ),
            median_seconds(lambda: kernels.softmax_cross_entropy(logits, target), reps),
            None,
            median_seconds(torch_ce, reps),
        )
    )

    # argmax: "find the class with the highest prediction value".
    rows.append(
        Row(
            "argmax  (predicted class)",
            "256 x 100 classes",
            float(np.any(kernels.argmax(logits) != np.argmax(logits, axis=1))),
            median_seconds(lambda: kernels.argmax(logits), reps),
            median_seconds(lambda: np.argmax(logits, axis=1), reps),
            median_seconds(lambda: torch.argmax(tl, dim=1), reps),
        )
    )

    # SGD with momentum: one step over a whole model's parameters in one flat buffer.
    n_sgd = 1_000_000 if quick else 10_000_000
    p = rng.standard_normal(n_sgd, dtype=np.float32)
    g = rng.standard_normal(n_sgd, dtype=np.float32)
    buf = np.zeros_like(p)
    tparam = torch.nn.Parameter(torch.from_numpy(p.copy()))
    tparam.grad = torch.from_numpy(g.copy())
    opt = torch.optim.SGD([tparam], lr=1e-3, momentum=0.9, weight_decay=1e-4)
    p_ref = p.astype(np.float64) - 1e-3 * (g + 1e-4 * p.astype(np.float64))
    p_check = p.copy()
    kernels.sgd_update(
        p_check, g, np.zeros_like(p), lr=1e-3, momentum=0.9, weight_decay=1e-4, first_step=True
    )
    rows.append(
        Row(
            "SGD step  w -= lr * (momentum buffer)",
            f"{n_sgd:,} params",
            rel_error(p_check, p_ref),
            median_seconds(
                lambda: kernels.sgd_update(
                    p, g, buf, lr=1e-3, momentum=0.9, weight_decay=1e-4, first_step=False
                ),
                reps,
            ),
            None,
            median_seconds(opt.step, reps),
        )
    )
    return rows


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _ratio(base: float | None, ours: float) -> str:
    return "-" if base is None else f"{base / ours:.2f}x"


# float32 kernels against a float64 reference: round-off is ~1e-6 relative; more is a bug.
MAX_REL_ERROR = 1e-4


def run(quick: bool = False, out: str | Path | None = None) -> int:
    """Print the kernel tour table; returns 1 when a kernel is off its reference by more
    than ``MAX_REL_ERROR``, else 0. With ``out``, then the diagnosis gallery (``gallery``),
    its plots written under ``out/gallery``; 1 also when a run misses its finding."""
    from fastcore_cv import get_num_threads

    print(f"fastcore-cv kernel tour ({get_num_threads()} threads; ratio > 1: ours faster)\n")
    head = ("idea", "case", "rel err", "ours", "numpy", "torch", "vs numpy", "vs torch")
    lines = [head]
    rows = _rows(quick)
    for r in rows:
        lines.append(
            (
                r.idea,
                r.case,
                f"{r.max_rel_error:.1e}",
                _fmt(r.ours_s),
                _fmt(r.numpy_s),
                _fmt(r.torch_s),
                _ratio(r.numpy_s, r.ours_s),
                _ratio(r.torch_s, r.ours_s),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    wrong = [r.idea for r in rows if not r.max_rel_error <= MAX_REL_ERROR]
    for idea in wrong:
        print(f"FAILED: {idea}: relative error above {MAX_REL_ERROR:g}")
    if out is not None:
        print("\nthe diagnosis gallery: one small model trained the wrong ways on purpose\n")
        runs = gallery(Path(out) / "gallery")
        print(gallery_table(runs))
        missed = [g.title for g in runs if not g.diagnosed]
        for title in missed:
            print(f"FAILED: {title}: expected {_expected(runs, title)}")
        wrong += missed
    return 1 if wrong else 0


# -- the diagnosis gallery ---------------------------------------------------------------
# The digits MLP (examples/digits_mlp.py: 64 pixels -> 128 ReLU -> 10, SGD with momentum)
# trained at lr_find's suggestion, then the wrong ways on purpose. Each
# run must get its finding, and the good run none: tests/test_tour_gallery.py checks it.


@dataclass
class GalleryRun:
    """One training run of the gallery: how it was trained, what diagnose() said about it."""

    title: str
    expected: str | None  # the finding code the run must get; None: no finding at all
    how: str  # the training call, in words
    history: Any  # learner.History
    findings: list = field(default_factory=list)
    plot: Path | None = None

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    @property
    def diagnosed(self) -> bool:
        return self.codes == [] if self.expected is None else self.expected in self.codes

    @property
    def error(self) -> float:
        return self.history.epochs[-1].metrics["error_rate"]


def _digits_learner(
    n_train: int | None = None, bs: int = 64, hidden: int = 128, wrong_labels: float = 0.0
) -> Any:
    from sklearn.datasets import load_digits
    from torch import nn

    from fastcore_cv.learner import DataLoaders, Learner, error_rate, set_seed
    from fastcore_cv.learner.fine_tune import sgd_momentum

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(42).permutation(len(y))  # examples/digits_mlp.py's split
    cut = int(0.8 * len(y))
    train = order[:cut][:n_train]
    y_train = y[train].copy()
    rng = np.random.default_rng(0)  # a seeded share of the training labels made wrong
    flip = rng.random(len(train)) < wrong_labels
    y_train[flip] = (y_train[flip] + rng.integers(1, 10, flip.sum())) % 10
    set_seed(0)
    dls = DataLoaders.from_tensors(x[train], y_train, x[order[cut:]], y[order[cut:]], bs=bs)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    # SGD with momentum, as examples/digits_mlp.py: with AdamW's decoupled weight decay the
    # memorising run's error plateaus instead of rising (its valid loss still rises), so the
    # lesson's "error gets better, then worse" would not show.
    return Learner(model, dls, metrics=[error_rate], seed=0, progress="silent",
                   opt_func=sgd_momentum)  # fmt: skip


OVERFIT = dict(n_train=200, bs=16, hidden=256, wrong_labels=0.2)


def gallery(out: str | Path | None = None) -> list[GalleryRun]:
    """Train the digits MLP right once and wrong four ways; diagnose each (plots to ``out``).

    The good LR is lr_find's suggestion (seed 0); "too high" is 100x it, at a constant LR
    (the loss explodes; under fit_one_cycle's warm-up it only stalls, at 62% error, and how
    far it first rises depends on the thread count), "too low" 1000x below it, "one epoch"
    stops after one, and "too many epochs" trains 40 epochs at a constant LR on 200
    training images, a fifth of them mislabelled as a downloaded folder is (the error is
    best early, then rises as the model memorises the wrong labels: measured 16% at epoch 6,
    21% at 40; clean labels only plateau, so the lesson's "better, then worse" would not show).
    """
    import warnings

    probe = _digits_learner()
    sweep = probe.lr_find(seed=0)
    lr = sweep.suggestion
    plans = [
        ("a good run", None, "fit_one_cycle", 8, lr, {}),
        ("LR 100x too high", "lr_too_high", "fit", 3, 100 * lr, {}),
        ("LR 1000x too low", "lr_too_low", "fit_one_cycle", 3, lr / 1000, {}),
        ("one epoch", "one_epoch", "fit_one_cycle", 1, lr, {}),
        ("too many epochs", "too_many_epochs", "fit", 40, lr, OVERFIT),
    ]
    runs = []
    for title, expected, how, epochs, run_lr, data in plans:
        learn = _digits_learner(**data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the NaN warning, if any
            getattr(learn, how)(epochs, run_lr)
        words = f"{how}({epochs}, {run_lr:.3g})"
        if data:
            words += f" on {data['n_train']} images, {data['wrong_labels']:.0%} mislabelled"
        runs.append(GalleryRun(title, expected, words, learn.recorder.history, learn.diagnose()))
        if out is not None:
            slug = title.replace(" ", "_").replace("/", "")
            runs[-1].plot = learn.recorder.plot_loss(Path(out) / f"{slug}.png")
    if out is not None:
        sweep.plot(Path(out) / "lr_find.png")
    return runs


def _expected(runs: list[GalleryRun], title: str) -> str:
    g = next(r for r in runs if r.title == title)
    return f"{g.expected or 'no finding'}, got {g.codes or 'no finding'}"


def gallery_table(runs: list[GalleryRun]) -> str:
    """Each run: how it was trained, its error, and what diagnose() said (with numbers)."""
    lines = []
    for g in runs:
        mark = "ok" if g.diagnosed else "MISSED"
        lines.append(
            f"{g.title}: {g.how}, error {g.error:.1%} -> {g.codes or 'no finding'} [{mark}]"
        )
        lines += [f"    {f}" for f in g.findings]
        if g.plot is not None:
            lines.append(f"    plot: {g.plot}")
    return "\n".join(lines)

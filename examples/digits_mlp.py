"""An MLP on scikit-learn's digits, trained on torch's layers and on the Numba kernels, then
the lesson's four ways a run goes wrong, each triggered on purpose and diagnosed.

Vocabulary on show: a mini-batch (bs images, one weight update), an epoch (one pass over
all mini-batches), the validation set (20%, seeded split), error rate = 1 - accuracy.

Run: python examples/digits_mlp.py [--out runs/digits_mlp]
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastcore_cv.learner import DataLoaders, Learner, compare_backends, error_rate, set_seed


def digits(seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as 64-pixel vectors scaled to [0, 1], split 80/20 with a seeded shuffle."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def mlp(hidden: int = 128) -> nn.Module:
    """64 pixels -> hidden ReLU units -> 10 class scores."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def learner(
    backend: str = "numba",
    n_train: int | None = None,
    bs: int = 64,
    seed: int = 0,
    label_noise: float = 0.0,
    hidden: int = 128,
) -> Learner:
    """A Learner on the digits; ``n_train`` keeps the first n training images and
    ``label_noise`` replaces that fraction of their labels with random classes."""
    xt, yt, xv, yv = digits()
    if n_train is not None:
        xt, yt = xt[:n_train], yt[:n_train]
    if label_noise:
        rng = np.random.default_rng(seed)
        yt = yt.copy()
        wrong = rng.random(len(yt)) < label_noise
        yt[wrong] = rng.integers(0, 10, int(wrong.sum()))
    set_seed(seed)
    dls = DataLoaders.from_tensors(xt, yt, xv, yv, bs=bs, shuffle=True)
    model = mlp(hidden)
    return Learner(
        model, dls, metrics=[error_rate], seed=seed, backend=backend, progress="silent",
        opt_func=SGD_MOMENTUM,  # the mistakes' LRs below were chosen for it
    )  # fmt: skip


# SGD with momentum 0.9 (the Learner's default was, until AdamW; on the numba backend its
# flat-buffer twin).
SGD_MOMENTUM = functools.partial(torch.optim.SGD, momentum=0.9)


# The four things that go wrong, each as (title, expected finding code, how to run it).
def lr_too_high() -> Learner:
    learn = learner()
    learn.fit(3, lr=20.0)
    return learn


def lr_too_low() -> Learner:
    learn = learner()
    learn.fit(3, lr=1e-5)
    return learn


def too_few_epochs() -> Learner:
    learn = learner(bs=32)
    learn.fit(1, lr=0.05)
    return learn


def too_many_epochs() -> Learner:
    # 400 training images, 30% of them with a wrong label. The model first learns the real
    # pattern (the error falls), then memorises the wrong labels (the error rises again).
    learn = learner(n_train=400, bs=16, label_noise=0.3, hidden=256)
    learn.fit(40, lr=0.1)
    return learn


MISTAKES = [
    ("learning rate too high", "lr_too_high", lr_too_high),
    ("learning rate too low", "lr_too_low", lr_too_low),
    ("too few epochs", "too_few_epochs", too_few_epochs),
    ("too many epochs", "too_many_epochs", too_many_epochs),
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/digits_mlp", help="where plots go")
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.set_printoptions(precision=4)

    print("== the same MLP, same seed, on torch's layers and on the Numba kernels ==")
    xt, yt, xv, yv = digits()
    comparison = compare_backends(
        mlp,
        lambda: DataLoaders.from_tensors(xt, yt, xv, yv, bs=64, shuffle=True),
        epochs=8,
        lr=0.5,
        metrics=(error_rate,),
    )
    print(comparison.table())

    print("\n== a good run: lr_find, then fit_one_cycle ==")
    learn = learner()
    found = learn.lr_find(seed=0)
    print(f"lr_find suggests {found.suggestion:.3g} ({found.note or 'steepest sustained slope'})")
    found.plot(out / "lr_find.png")
    learn.fit_one_cycle(8, found.suggestion)
    learn.recorder.print_table()
    learn.recorder.plot_loss(out / "losses.png")
    good_error = learn.recorder.history.epochs[-1].metrics["error_rate"]
    print(f"error rate {good_error:.2%}; findings: {[f.code for f in learn.diagnose()] or 'none'}")

    seen = {}
    for title, code, run in MISTAKES:
        print(f"\n== {title} ==")
        learn = run()
        learn.recorder.print_table()
        findings = learn.diagnose()
        for f in findings:
            print(f"  {f}")
        seen[code] = [f.code for f in findings]
    return {"comparison": comparison, "good_error": good_error, "findings": seen}


if __name__ == "__main__":
    main()

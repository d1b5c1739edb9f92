"""``compare_backends``: the same model, data and seed trained on torch's layers and on the
Numba kernels, with loss parity and step time side by side (the lesson's "same SGD, three
ways" at the scale of a real network)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fastcore_cv.backend import BACKENDS
from fastcore_cv.learner.core import Learner
from fastcore_cv.learner.fine_tune import sgd_momentum
from fastcore_cv.learner.seed import set_seed


@dataclass
class BackendRun:
    """What one backend's training run produced."""

    backend: str
    batch_losses: list[float]
    step_seconds: list[float]
    valid_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def median_step_ms(self) -> float:
        return statistics.median(self.step_seconds) * 1e3


@dataclass
class BackendComparison:
    """Two runs of the same model, data and seed: how close the losses are, how fast each was."""

    torch: BackendRun
    numba: BackendRun

    @property
    def max_loss_diff(self) -> float:
        pairs = zip(self.torch.batch_losses, self.numba.batch_losses, strict=True)
        return max(abs(a - b) for a, b in pairs)

    @property
    def speedup(self) -> float:
        return self.torch.median_step_ms / self.numba.median_step_ms

    def table(self) -> str:
        """A plain-text table of both runs."""
        names = sorted(set(self.torch.metrics) | set(self.numba.metrics))
        head = ["backend", "step (median)", "final batch loss", "valid loss", *names]
        rows = [head]
        for run in (self.torch, self.numba):
            valid = "-" if run.valid_loss is None else f"{run.valid_loss:.4f}"
            rows.append(
                [
                    run.backend,
                    f"{run.median_step_ms:.2f} ms",
                    f"{run.batch_losses[-1]:.4f}",
                    valid,
                    *(f"{run.metrics.get(n, float('nan')):.4f}" for n in names),
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.append(
            f"numba backend: {self.speedup:.2f}x the speed of torch per step; "
            f"largest per-batch loss difference {self.max_loss_diff:.2e}"
        )
        return "\n".join(lines)


def compare_backends(
    make_model: Callable[[], nn.Module],
    make_dls: Callable[[], Any],
    epochs: int = 1,
    lr: float = 0.1,
    seed: int = 0,
    metrics: tuple = (),
    one_cycle: bool = True,
    opt_func: Callable[..., Any] = sgd_momentum,
) -> BackendComparison:
    """Train ``make_model()`` on ``make_dls()`` from the same ``seed`` with each backend.

    The factories are called after seeding, once per backend, so both runs start from the
    same weights and see the same batches; only the layers, loss and optimizer differ.
    ``opt_func`` defaults to SGD with momentum 0.9 (the lesson's "same SGD"; on the numba
    backend its flat-buffer twin), not the Learner's AdamW, whose LRs are 100x smaller.
    """
    runs = {}
    for backend in BACKENDS:
        set_seed(seed)
        model, dls = make_model(), make_dls()
        learn = Learner(model, dls, metrics=metrics, seed=seed, backend=backend,
                        progress="silent", opt_func=opt_func)  # fmt: skip
        if one_cycle:
            learn.fit_one_cycle(epochs, lr)
        else:
            learn.fit(epochs, lr)
        history = learn.recorder.history
        last = history.epochs[-1]
        runs[backend] = BackendRun(
            backend,
            list(history.batch_losses),
            list(history.batch_times),
            last.valid_loss,
            dict(last.metrics),
        )
    return BackendComparison(runs["torch"], runs["numba"])

"""Callbacks: small objects told about each stage of a fit; they may ask the fit to stop.

Events, in order: ``before_fit``, ``before_epoch``, ``after_batch``, ``after_epoch`` (after
validation and recording), ``after_fit``. A callback stops training by setting
``learn.stop_training = True`` and saying why in ``learn.recorder.history.stop_reason``;
it never reaches into the loop's locals.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import torch

from fastcore_cv.checks import check_choice
from fastcore_cv.output_files import atomic_save
from fastcore_cv.progress import MODES, Progress, resolve_mode

if TYPE_CHECKING:
    from fastcore_cv.learner.core import Learner


class Callback:
    """Base class: override the events you need. Lower ``order`` runs first."""

    order = 0

    def before_fit(self, learn: Learner) -> None: ...
    def before_epoch(self, learn: Learner) -> None: ...
    def after_batch(self, learn: Learner) -> None: ...
    def after_epoch(self, learn: Learner) -> None: ...
    def after_fit(self, learn: Learner) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss (raised by ``TerminateOnNaN(raise_error=True)``)."""


class TerminateOnNaN(Callback):
    """Stop at the first NaN/inf training loss, with a message saying what it usually means.

    The batch with the bad loss never updates the weights, so the model keeps its last
    finite state. Default: warn and stop (``learn.diagnose()`` then reports 'lr_too_high');
    ``raise_error=True`` raises ``NonFiniteLossError`` instead.
    """

    order = -10

    def __init__(self, raise_error: bool = False) -> None:
        self.raise_error = raise_error

    def after_batch(self, learn: Learner) -> None:
        if math.isfinite(learn.last_loss):
            return
        h = learn.recorder.history
        msg = (
            f"training loss became {learn.last_loss} at epoch {learn.epoch}, batch "
            f"{learn.batch_idx} (lr={h.batch_lrs[-1]:.3g}); stopped. The learning rate is "
            "probably too high: the loss exploded. Try a learning rate ~10x lower "
            "(learn.lr_find() suggests one)."
        )
        h.stop_reason, h.diverged = msg, True
        learn.stop_training = True
        if self.raise_error:
            raise NonFiniteLossError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)


def _better(mode: str, value: float | None, best: float, min_delta: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _monitor_direction(monitor: str, mode: str) -> str:
    """'auto': maximise accuracy-like metrics (accuracy, precision, recall, f1), else minimise."""
    check_choice(mode, "mode", ["auto", "min", "max"])
    if mode != "auto":
        return mode
    higher = ("acc", "precision", "recall", "f1", "auc")
    return "max" if any(k in monitor.lower() for k in higher) else "min"


class _Monitor(Callback):
    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        self.monitor, self.min_delta = monitor, min_delta
        self.mode = _monitor_direction(monitor, mode)  # "min" or "max"

    def before_fit(self, learn: Learner) -> None:
        names = ["train_loss", "valid_loss", *learn.recorder.metric_names]
        if self.monitor not in names:
            raise ValueError(f"monitor: {self.monitor!r} is not recorded; choose one of {names}")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None

    def _improved(self, learn: Learner) -> bool:
        value = learn.recorder.history.epochs[-1].get(self.monitor)
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch = value, learn.epoch
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(
        self,
        monitor: str = "valid_loss",
        patience: int = 1,
        min_delta: float = 0.0,
        mode: str = "auto",
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = patience

    def after_epoch(self, learn: Learner) -> None:
        if self._improved(learn) or self.best_epoch is None:
            return
        if learn.epoch - self.best_epoch >= self.patience:
            learn.stop_training = True
            waited = learn.epoch - self.best_epoch
            learn.recorder.history.stop_reason = (
                f"early stopping: {self.monitor} has not improved for {waited} epoch(s); "
                f"best {self.best:.6g} at epoch {self.best_epoch}"
            )


class SaveBest(_Monitor):
    """Save the weights whenever ``monitor`` improves; reload the best at the end of the fit.

    The file is written atomically (temp file in the same folder, then ``os.replace``), so
    an interrupted run never leaves a half-written checkpoint. Weights only (a state_dict),
    loadable with ``torch.load(path, weights_only=True)``.
    """

    order = 10

    def __init__(
        self,
        path: str | Path,
        monitor: str = "valid_loss",
        mode: str = "auto",
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.path, self.restore_best = Path(path), restore_best

    def after_epoch(self, learn: Learner) -> None:
        if self._improved(learn):
            atomic_save(learn.model.state_dict(), self.path)

    def after_fit(self, learn: Learner) -> None:
        if self.restore_best and self.best_epoch is not None and self.path.exists():
            learn.model.load_state_dict(torch.load(self.path, weights_only=True))


class ProgressCallback(Callback):
    """A bar per epoch on a terminal or in a notebook (``fastcore_cv.progress``); one plain
    line per epoch in logs or when CI is set.

    Plain mode prints the table header once and a row per epoch: no carriage-return
    spam in log files (a common complaint about progress bars outside notebooks).
    """

    order = 100

    def __init__(self, mode: str = "auto", file: TextIO | None = None) -> None:
        check_choice(mode, "mode", MODES)
        self.mode, self.file = mode, file
        self._bar: Progress | None = None

    def _out(self) -> TextIO:
        return self.file if self.file is not None else sys.stdout

    def before_fit(self, learn: Learner) -> None:
        mode = self._mode = resolve_mode(self.mode, "mode")
        if mode != "silent":
            print(learn.recorder.header(), file=self._out(), flush=True)

    def before_epoch(self, learn: Learner) -> None:
        if self._mode == "bar":  # plain mode: the epoch's row is its progress line
            self._bar = Progress(learn.n_batches, f"epoch {learn.epoch}", "bar", leave=False)

    def after_batch(self, learn: Learner) -> None:
        if self._bar is not None:
            self._bar.update(status=f"loss={learn.last_loss:.4f}")

    def after_epoch(self, learn: Learner) -> None:
        self._close()
        if self._mode != "silent":
            print(
                learn.recorder.format_row(learn.recorder.history.epochs[-1]),
                file=self._out(),
                flush=True,
            )

    def after_fit(self, learn: Learner) -> None:
        self._close()
        reason = learn.recorder.history.stop_reason
        if reason and self._mode != "silent":
            print(f"stopped: {reason}", file=self._out(), flush=True)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

"""What happened during a fit: per-batch loss/LR/momentum, per-epoch table, PNG plots.

``History`` is plain data (no torch) so diagnostics can be read, tested and taught on
hand-written histories; ``Recorder`` fills one during ``fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fastcore_cv.learner.plots import save_figure


@dataclass
class EpochRow:
    """One line of the epoch table. ``valid_loss`` is None when there is no validation set."""

    epoch: int
    train_loss: float
    valid_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    time: float = 0.0
    iters: int = 0  # batches seen since the start of the fit, at the end of this epoch
    # The training loss measured like valid_loss: eval mode, end-of-epoch weights, on a fixed
    # seeded sample of the training set (None when not measured); and what it cost, seconds.
    train_loss_eval: float | None = None
    train_eval_time: float = 0.0

    def get(self, name: str) -> float | None:
        """A column by name: 'train_loss', 'train_loss_eval', 'valid_loss' or a metric."""
        if name in ("train_loss", "train_loss_eval", "valid_loss"):
            return getattr(self, name)
        return self.metrics.get(name)


@dataclass
class History:
    """Everything recorded in one fit (a new fit starts a new history)."""

    batch_losses: list[float] = field(default_factory=list)
    batch_lrs: list[float] = field(default_factory=list)  # last param group: the head
    batch_moms: list[float] = field(default_factory=list)  # NaN when the optimizer has none
    batch_times: list[float] = field(default_factory=list)  # seconds per training step
    epochs: list[EpochRow] = field(default_factory=list)
    stop_reason: str | None = None  # why the fit ended early, in words
    diverged: bool = False  # training stopped on a NaN/inf loss

    @classmethod
    def from_epochs(
        cls,
        train: list[float],
        valid: list[float | None],
        metrics: dict[str, list[float]] | None = None,
        batch_losses: list[float] | None = None,
        diverged: bool = False,
        train_eval: list[float | None] | None = None,
    ) -> History:
        """A synthetic history from per-epoch columns (for lessons and tests);
        ``train_eval``: the eval-mode training loss per epoch (``EpochRow.train_loss_eval``)."""
        if len(train) != len(valid):
            raise ValueError(f"valid: {len(valid)} values for {len(train)} train losses")
        train_eval = [None] * len(train) if train_eval is None else list(train_eval)
        if len(train_eval) != len(train):
            raise ValueError(f"train_eval: {len(train_eval)} values for {len(train)} epochs")
        metrics = metrics or {}
        rows = [
            EpochRow(
                i,
                float(t),
                None if v is None else float(v),
                {k: float(m[i]) for k, m in metrics.items()},
                train_loss_eval=None if e is None else float(e),
            )
            for i, (t, v, e) in enumerate(zip(train, valid, train_eval, strict=True))
        ]
        return cls(batch_losses=list(batch_losses or []), epochs=rows, diverged=diverged)

    @property
    def train_losses(self) -> list[float]:
        return [r.train_loss for r in self.epochs]

    @property
    def valid_losses(self) -> list[float | None]:
        return [r.valid_loss for r in self.epochs]

    @property
    def train_eval_losses(self) -> list[float | None]:
        """``train_loss_eval`` per epoch (None where it was not measured)."""
        return [r.train_loss_eval for r in self.epochs]

    def column(self, name: str) -> list[float | None]:
        return [r.get(name) for r in self.epochs]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.6f}" if math.isfinite(v) else str(v)


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m:02d}:{s:02d}"


class Recorder:
    """Records a fit into ``self.history``; prints the epoch table and saves plots as PNG."""

    def __init__(self) -> None:
        self.history = History()
        self.metric_names: list[str] = []

    def begin_fit(self, metric_names: list[str]) -> None:
        self.history = History()
        self.metric_names = list(metric_names)

    def log_batch(self, loss: float, lr: float, mom: float | None, seconds: float) -> None:
        h = self.history
        h.batch_losses.append(loss)
        h.batch_lrs.append(lr)
        h.batch_moms.append(math.nan if mom is None else mom)
        h.batch_times.append(seconds)

    def log_epoch(self, row: EpochRow) -> None:
        self.history.epochs.append(row)

    @property
    def columns(self) -> list[str]:
        """train_loss: running mean in train mode; train_loss_eval: measured like valid_loss."""
        return ["epoch", "train_loss", "train_loss_eval", "valid_loss", *self.metric_names, "time"]

    def header(self) -> str:
        return "  ".join(f"{c:<10}" for c in self.columns).rstrip()

    def format_row(self, row: EpochRow) -> str:
        cells = [str(row.epoch), _fmt(row.train_loss), _fmt(row.train_loss_eval)]
        cells.append(_fmt(row.valid_loss))
        cells += [_fmt(row.metrics.get(m)) for m in self.metric_names]
        cells.append(_fmt_time(row.time))
        return "  ".join(f"{c:<10}" for c in cells).rstrip()

    def table(self) -> str:
        """The epoch table as text (what fastai shows after each epoch)."""
        return "\n".join([self.header(), *(self.format_row(r) for r in self.history.epochs)])

    def print_table(self) -> None:
        print(self.table())

    def __str__(self) -> str:
        return self.table()

    def plot_loss(self, path: str | Path, skip_start: int = 0) -> Path:
        """Training loss per batch (raw and smoothed) and validation loss at each epoch end."""
        h = self.history
        if not h.batch_losses:
            raise ValueError("path: nothing to plot yet; call fit first")
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        it = np.arange(len(h.batch_losses))[skip_start:]
        raw = np.asarray(h.batch_losses)[skip_start:]
        ax.plot(it, raw, alpha=0.3, label="train (per batch)")
        finite = np.isfinite(raw)
        smooth = np.full(len(raw), np.nan)
        smooth[finite] = zero_phase_smooth(raw[finite], plot_bandwidth(int(finite.sum())))
        ax.plot(it, smooth, label="train (zero-phase smoothing)")
        ends = [(r.iters - 1, r.train_loss_eval) for r in h.epochs if r.train_loss_eval is not None]
        if ends:
            ax.plot(*zip(*ends, strict=True), "s--", label="train, measured like valid")
        ends = [(r.iters - 1, r.valid_loss) for r in h.epochs if r.valid_loss is not None]
        if ends:
            ax.plot(*zip(*ends, strict=True), "o-", label="valid (epoch end)")
        ax.set_xlabel("batches processed")
        ax.set_ylabel("loss")
        ax.legend()
        return save_figure(fig, path)

    def plot_sched(self, path: str | Path) -> Path:
        """Learning rate and momentum per batch, as the schedule drove them."""
        h = self.history
        if not h.batch_lrs:
            raise ValueError("path: nothing to plot yet; call fit first")
        fig = Figure(figsize=(8, 3))
        ax_lr, ax_mom = fig.subplots(1, 2)
        ax_lr.plot(h.batch_lrs)
        ax_lr.set_title("learning rate")
        ax_mom.plot(h.batch_moms)
        ax_mom.set_title("momentum")
        for ax in (ax_lr, ax_mom):
            ax.set_xlabel("batches processed")
        return save_figure(fig, path)

    def _repr_png_(self) -> bytes | None:
        """The loss plot inline in a notebook (None, so the text shows, before any fit)."""
        from fastcore_cv.display import png_from

        return png_from(self.plot_loss) if self.history.batch_losses else None


def plot_bandwidth(n: int) -> float:
    """The loss plot's smoothing bandwidth (sd, in batches): n/20, at most 25 (then about as
    smooth as fastai's EMA 0.98, whose ~50-batch memory averages about as many points)."""
    return min(25.0, max(1.0, n / 20))


class SmoothedLoss:
    """Debiased exponential moving average fed one value at a time, as fastai smooths losses
    (the zero start biases early averages low; dividing by 1 - beta**n removes that)."""

    def __init__(self, beta: float = 0.98) -> None:
        self.beta, self.avg, self.n = beta, 0.0, 0

    def add(self, value: float) -> float:
        """Take the next value; return the debiased average so far."""
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        return self.avg / (1 - self.beta**self.n)


def ema(values: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Debiased exponential moving average of a whole series (``SmoothedLoss`` over it)."""
    smoothed = SmoothedLoss(beta)
    return np.array([smoothed.add(v) for v in values], dtype=np.float64)


def zero_phase_smooth(values: np.ndarray, bandwidth: float) -> np.ndarray:
    """A smoothing that does not shift the curve: at each point, a straight-line fit to its
    neighbours (Gaussian weights, sd ``bandwidth`` points, cut at 3 sd), evaluated at the
    point itself (local linear regression, as in LOWESS).

    An EMA only looks back, so it lags: on a falling curve it sits above the truth and its
    steepest part comes late. A centred fit looks both ways equally, and a straight-line fit
    (unlike a centred mean) stays unbiased on slopes and at the two ends. ``values`` must be
    finite and evenly spaced (batches, or an exponential LR sweep in log-LR).
    """
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    if n < 3 or bandwidth <= 0:
        return y.copy()
    half = max(1, int(math.ceil(3 * bandwidth)))
    w = np.exp(-0.5 * (np.arange(-half, half + 1) / bandwidth) ** 2)
    i = np.arange(n, dtype=np.float64)

    def around(a: np.ndarray) -> np.ndarray:
        # sum_j a_j w(i - j) for each i: a full convolution cut back to the n points
        return np.convolve(a, w, mode="full")[half : half + n]

    # Weighted sums over each neighbourhood, offsets (j - i) measured from the point.
    s0, t0, si = around(np.ones(n)), around(y), around(i)
    s1, t1 = si - i * s0, around(i * y) - i * t0
    s2 = around(i * i) - 2 * i * si + i * i * s0
    det = s0 * s2 - s1 * s1
    ok = det > 1e-9 * s0 * s2
    fit = (s2 * t0 - s1 * t1) / np.where(ok, det, 1.0)
    return np.where(ok, fit, t0 / s0)


def centred_median(values: np.ndarray, width: int) -> np.ndarray:
    """Median of each point and its neighbours (``width`` points, fewer at the ends): a
    zero-phase filter that removes isolated spikes without moving edges."""
    y = np.asarray(values, dtype=np.float64)
    half = max(0, int(width) // 2)
    if half == 0 or len(y) < 3:
        return y.copy()
    return np.array([np.median(y[max(0, k - half) : k + half + 1]) for k in range(len(y))])

"""The learning-rate finder: sweep the LR up exponentially, one batch each, and read the curve.

The lesson's rule for reading it: "the strongest downward slope that's sticking around for a
while". ``sustained_slope`` is that rule as an algorithm (see its docstring); ``minimum_div10``
and ``steepest`` are fastai's older suggestions, kept for comparison. All three take plain
arrays, never index past the end, and work on any curve with at least one finite point.

A suggestion function is ``f(lrs, smooth_losses) -> lr`` (or ``(lr, note)``), the way fastai's
``suggest_funcs`` are: ``learn.lr_find(suggest_funcs=(steepest, minimum_div10))`` gives
``result.suggestions == {"steepest": ..., "minimum_div10": ...}``. ``median_of_sweeps`` (what
``fine_tune`` uses for the head's LR) reads several seeded sweeps with the same rule.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from fastcore_cv.checks import check_int, check_number
from fastcore_cv.learner.data import endless_batches
from fastcore_cv.learner.plots import save_figure
from fastcore_cv.learner.recorder import SmoothedLoss
from fastcore_cv.learner.seed import preserved_rng, set_seed

if TYPE_CHECKING:
    from fastcore_cv.learner.core import Learner

# Slopes are measured over half a decade of LR. fastai's default sweep (100 points over 8
# decades) puts ~6 points in that window: wide enough that a wiggle left by the EMA cannot
# pass for a descent, narrow enough to resolve the steep part of a 2-3 decade valley
# (checked on the synthetic clean/noisy curves in tests/learner/test_lr_finder.py).
WINDOW_DECADES = 0.5
# A descent that lowers the loss by less than 2% of its typical level is treated as flat.
FLAT_DROP = 0.02
# fastai's divergence rule: stop once the smoothed loss exceeds 4x the best seen.
STOP_FACTOR = 4.0
BETA = 0.98  # the loss smoothing (fastai's)
# How many seeded sweeps ``median_of_sweeps`` reads (see its docstring for the measurement).
SWEEPS = 5

SuggestFunc = Callable[[np.ndarray, np.ndarray], "float | tuple[float, str]"]


def _clean(lrs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if lrs.ndim != 1 or lrs.shape != losses.shape:
        raise ValueError(f"losses: expected one loss per lr, got {losses.shape} vs lrs {lrs.shape}")
    if np.any(lrs <= 0) or np.any(np.diff(lrs) <= 0):
        raise ValueError("lrs: must be positive and strictly increasing")
    keep = np.isfinite(losses)
    if not keep.any():
        raise ValueError("losses: no finite values; the sweep diverged at its first step")
    return lrs[keep], losses[keep]


def minimum_div10(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR at the lowest loss, divided by 10 (fastai's classic rule of thumb)."""
    lrs, losses = _clean(lrs, losses)
    return float(lrs[np.argmin(losses)] / 10)


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest between two neighbouring points (noise-sensitive).

    Like fastai, the first 10% of a long curve is skipped: there the debiased EMA is still
    close to the raw, noisy batch losses.
    """
    lrs, losses = _clean(lrs, losses)
    skip = len(lrs) // 10 if len(lrs) >= 10 else 0
    lrs, losses = lrs[skip:], losses[skip:]
    if len(lrs) < 2:
        return float(lrs[0])
    grads = np.diff(losses) / np.diff(np.log10(lrs))
    return float(lrs[np.argmin(grads)])


def sustained_slope(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    """The lesson's suggestion and a note on how it was found.

    1. Measure the slope of loss vs log10(lr) over a window of half a decade, so a slope
       must be sustained for a while, not be one noisy step.
    2. Find the runs of consecutive windows where the loss falls, and keep the widest run
       (in decades): the longest descent, not a brief dip.
    3. Inside it take the window with the strongest downward slope; suggest the LR at its
       centre.
    When no run lowers the loss meaningfully (flat curve, or a loss rising from the first
    step), fall back to ``minimum_div10`` and say so in the note.
    """
    lrs, losses = _clean(lrs, losses)
    n = len(lrs)
    x = np.log10(lrs)
    if n >= 2:
        per_decade = (n - 1) / (x[-1] - x[0])
        w = int(np.clip(round(per_decade * WINDOW_DECADES), 1, max(1, (n - 1) // 2)))
        slopes = (losses[w:] - losses[:-w]) / (x[w:] - x[:-w])  # window i spans points i..i+w
        best = _widest_descent(slopes, x, w)
        if best is not None:
            start, stop = best
            drop = losses[start] - losses[stop - 1 + w]
            level = max(float(np.median(np.abs(losses))), 1e-12)
            if drop >= FLAT_DROP * level:
                i = start + int(np.argmin(slopes[start:stop]))
                lr = float(10 ** ((x[i] + x[i + w]) / 2))
                return lr, (
                    f"steepest slope over {w} point(s) inside the longest descent "
                    f"({lrs[start]:.2e} to {lrs[stop - 1 + w]:.2e})"
                )
    fallback = minimum_div10(lrs, losses)
    if int(np.argmin(losses)) == 0:
        why = "the loss never fell below its first value: lower start_lr or check the model"
    else:
        why = "the loss curve is too flat to show a sustained downward slope"
    return fallback, f"{why}; fell back to minimum/10"


# The suggestions a sweep reports by name unless ``suggest_funcs`` says otherwise.
DEFAULT_SUGGEST_FUNCS: tuple[SuggestFunc, ...] = (sustained_slope, minimum_div10, steepest)


def _widest_descent(slopes: np.ndarray, x: np.ndarray, w: int) -> tuple[int, int] | None:
    """[start, stop) of the run of negative slopes spanning the most decades of LR."""
    best, best_span = None, 0.0
    start = None
    for i, falling in enumerate(np.append(slopes < 0, False)):
        if falling and start is None:
            start = i
        elif not falling and start is not None:
            span = x[i - 1 + w] - x[start]
            if span > best_span:
                best, best_span = (start, i), span
            start = None
    return best


def _as_lr(out: float | tuple[float, str]) -> float:
    """A suggestion function's LR (a function may also return ``(lr, note)``)."""
    return float(out[0] if isinstance(out, tuple) else out)


def check_suggest_funcs(funcs: Sequence[SuggestFunc]) -> tuple[SuggestFunc, ...]:
    """``funcs`` as a tuple; TypeError naming ``suggest_funcs`` unless all are callable,
    ValueError if two share a name (``LRFinderResult.suggestions`` is keyed by name)."""
    funcs = tuple(funcs)
    if not all(callable(f) for f in funcs):
        raise TypeError(f"suggest_funcs: expected functions f(lrs, losses), got {funcs!r}")
    names = [suggest_name(f) for f in funcs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(
            f"suggest_funcs: {names.count(clashes[0])} functions are named {clashes[0]!r}; "
            "give each its own __name__ (a functools.partial is named 'partial': use a def)"
        )
    return funcs


def suggest_name(func: SuggestFunc) -> str:
    """The key of ``func``'s value in ``LRFinderResult.suggestions``."""
    return getattr(func, "__name__", None) or type(func).__name__


@dataclass(frozen=True)
class LRFinderResult:
    """The curve of an LR sweep and the suggestions read from it (a stable, plain type:
    arrays, numbers and a name -> LR dict; the functions are not kept).

    ``suggestion`` and ``note``: the lesson's rule (``sustained_slope``), whatever
    ``suggest_funcs`` holds; ``suggestions``: name -> LR of each of ``suggest_funcs``
    (default ``DEFAULT_SUGGEST_FUNCS``). Each function runs once.
    """

    lrs: np.ndarray
    losses: np.ndarray  # raw loss of each batch
    smooth_losses: np.ndarray  # debiased EMA (beta 0.98), what the suggestions read
    stopped_early: bool
    suggest_funcs: InitVar[Sequence[SuggestFunc]] = ()
    suggestion: float = field(init=False)
    note: str = field(init=False)
    minimum_div10: float = field(init=False)
    steepest: float = field(init=False)
    suggestions: dict[str, float] = field(init=False)

    def __post_init__(self, suggest_funcs: Sequence[SuggestFunc]) -> None:
        funcs = check_suggest_funcs(suggest_funcs) or DEFAULT_SUGGEST_FUNCS
        outputs: dict[int, float | tuple[float, str]] = {}  # id(function) -> what it gave
        for f in (*DEFAULT_SUGGEST_FUNCS, *funcs):
            if id(f) not in outputs:
                outputs[id(f)] = f(self.lrs, self.smooth_losses)
        lr, note = outputs[id(sustained_slope)]
        object.__setattr__(self, "suggestion", lr)
        object.__setattr__(self, "note", note)
        object.__setattr__(self, "minimum_div10", outputs[id(minimum_div10)])
        object.__setattr__(self, "steepest", outputs[id(steepest)])
        suggestions = {suggest_name(f): _as_lr(outputs[id(f)]) for f in funcs}
        object.__setattr__(self, "suggestions", suggestions)

    def __repr__(self) -> str:
        return (
            f"LRFinderResult(suggestion={self.suggestion:.2e}, minimum_div10="
            f"{self.minimum_div10:.2e}, steepest={self.steepest:.2e}, points={len(self.lrs)}, "
            f"stopped_early={self.stopped_early}, note={self.note!r})"
        )

    def plot(self, path: str | Path) -> Path:
        """Loss vs LR (log scale) with the three suggestions marked, saved as PNG."""
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, alpha=0.3, label="loss per batch")
        ax.plot(self.lrs, self.smooth_losses, label="smoothed")
        for lr, style, name in (
            (self.suggestion, "ro", "suggestion (sustained slope)"),
            (self.minimum_div10, "g^", "minimum / 10"),
            (self.steepest, "ks", "steepest"),
        ):
            ax.plot(
                lr,
                np.interp(np.log10(lr), np.log10(self.lrs), self.smooth_losses),
                style,
                label=f"{name}: {lr:.1e}",
            )
        # The divergence at the end can be 10x the rest: zoom on the part up to the minimum.
        finite = np.where(np.isfinite(self.smooth_losses), self.smooth_losses, np.inf)
        low = int(np.argmin(finite))
        top, bottom = finite[: low + 1].max(), finite[low]
        pad = 0.1 * max(top - bottom, 1e-3 * max(abs(top), 1e-12))
        ax.set_ylim(bottom - pad, top + 3 * pad)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend(fontsize="small")
        return save_figure(fig, path)


def check_sweep_args(start_lr: float, end_lr: float, num_it: int) -> None:
    """Raise naming the argument when a sweep cannot be run as asked."""
    if isinstance(num_it, bool) or not isinstance(num_it, int):
        raise TypeError(f"num_it: expected an int, got {type(num_it).__name__}")
    if num_it < 5:
        raise ValueError(f"num_it: need at least 5 iterations to read a slope, got {num_it}")
    start_lr = check_number(start_lr, "start_lr", low=0.0)
    end_lr = check_number(end_lr, "end_lr", low=0.0)
    if start_lr <= 0:
        raise ValueError(f"start_lr: must be > 0 (the sweep is exponential), got {start_lr}")
    if end_lr <= start_lr:
        raise ValueError(f"end_lr: must be above start_lr ({start_lr}), got {end_lr}")


def run_lr_find(
    learn: Learner,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    stop_div: bool = True,
    suggest_funcs: Sequence[SuggestFunc] = (),
) -> LRFinderResult:
    """Sweep ``learn``'s real model; ``Learner.lr_find`` snapshots and restores state around it."""
    check_sweep_args(start_lr, end_lr, num_it)
    sched = start_lr * (end_lr / start_lr) ** (np.arange(num_it) / (num_it - 1))
    lrs, losses, smooth = [], [], []
    smoother, best = SmoothedLoss(BETA), math.inf
    batches = endless_batches(learn.dls.train, "training")
    for i, lr in enumerate(sched):
        (x, y), where = next(batches)
        learn.set_hypers(np.full(learn.n_groups, lr), None)
        loss = learn.one_batch(x, y, where, first=i == 0)
        lrs.append(lr)
        losses.append(loss)
        smooth.append(smoother.add(loss))
        if not math.isfinite(smooth[-1]):
            break
        best = min(best, smooth[-1])
        if stop_div and smooth[-1] > STOP_FACTOR * best:
            break
    stopped = len(lrs) < num_it
    return LRFinderResult(
        np.array(lrs), np.array(losses), np.array(smooth), stopped, tuple(suggest_funcs)
    )


def lr_find(
    learn: Learner,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    seed: int | None = None,
    stop_div: bool = True,
    suggest_funcs: Sequence[SuggestFunc] = (),
) -> LRFinderResult:
    """Run a sweep, then put back weights, buffers, optimizer state, train mode and RNGs."""
    check_sweep_args(start_lr, end_lr, num_it)
    check_suggest_funcs(suggest_funcs)
    had_opt = learn.opt is not None
    learn.prepare()
    model_state = copy.deepcopy(learn.model.state_dict())
    opt_state = copy.deepcopy(learn.opt.state_dict())
    training = learn.model.training
    with preserved_rng():
        if seed is not None:
            set_seed(seed)
        try:
            return run_lr_find(learn, start_lr, end_lr, num_it, stop_div, suggest_funcs)
        finally:
            learn.model.load_state_dict(model_state)
            learn.opt.load_state_dict(opt_state)
            learn.model.train(training)
            if not had_opt:
                learn.opt = None


def median_of_sweeps(learn: Learner, sweeps: int = SWEEPS) -> tuple[float, list[LRFinderResult]]:
    """The median suggestion of ``sweeps`` ``lr_find`` runs seeded 0, 1, ...; and the runs.

    One sweep's suggestion varied 3.7x between seeds on the digits features (0.095 to 0.35);
    the median of 5 varied 2x (0.14 to 0.29). With the body frozen a sweep costs well under a
    second, so the steadier answer is nearly free.
    """
    check_int(sweeps, "sweeps")
    results = [learn.lr_find(seed=s) for s in range(sweeps)]
    return float(np.median([r.suggestion for r in results])), results

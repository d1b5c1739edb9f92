"""The learning-rate finder: sweep the LR up exponentially, one batch each, and read the curve.

The rules live in learner/lr_rules.py: ``past_steepest`` (the default suggestion: twice the
LR where the fit falls fastest, where the raw loss is still clearly falling), ``valley``
(2/3 of the way down the longest descent), ``sustained_slope``
(the lesson's "strongest downward slope that's sticking around for a while"), ``slope_end``,
and fastai's older ``minimum_div10`` and ``steepest``, kept for comparison.

A suggestion function is ``f(lrs, fitted_losses) -> lr`` (or ``(lr, note)``), the way fastai's
``suggest_funcs`` are: ``learn.lr_find(suggest_funcs=(steepest, minimum_div10))`` gives
``result.suggestions == {"steepest": ..., "minimum_div10": ...}``. ``median_of_sweeps`` (what
``fine_tune`` uses for the head's LR) reads several seeded sweeps with the same rule.

The suggestions read ``fitted_losses``, a zero-phase smoothing of the raw losses
(``recorder.zero_phase_smooth``), not fastai's EMA: the EMA only looks back, so its curve
lags the raw one by about a decade of LR and a rule read off it lands where the raw loss has
nearly stopped falling. The EMA still decides when the sweep stops (it is causal) and is
drawn on the plot as what fastai shows.
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
from fastcore_cv.learner.lr_rules import (
    minimum_div10,
    past_steepest,
    slope_end,
    steepest,
    sustained_slope,
    valley,
)
from fastcore_cv.learner.plots import save_figure
from fastcore_cv.learner.recorder import SmoothedLoss, centred_median, zero_phase_smooth
from fastcore_cv.learner.seed import preserved_rng, set_seed

if TYPE_CHECKING:
    from fastcore_cv.learner.core import Learner

# fastai's divergence rule: stop once the smoothed loss exceeds 4x the best seen.
STOP_FACTOR = 4.0
BETA = 0.98  # the EMA of the stop rule and of fastai's plot
# Bandwidth (Gaussian sd, in decades of LR) of the zero-phase fit the suggestions read.
# Measured on noisy sigmoid descents (noise sd 0.08, 20 seeds, 100 points over 8 decades;
# descents 0.15-0.8 decades wide centred at 1e-4..1e-1): sustained_slope on the EMA lands
# 2.6-15x right of the true steepest point (median), on this fit 0.9-1.15x; the seed
# spread (max/min) shrinks from 2-24x at 0.2 decades to 1.2-6x at 0.4 (0.5: 1.2-3x but
# starts to flatten valleys under a decade wide).
FIT_DECADES = 0.4
# How many seeded sweeps ``median_of_sweeps`` reads (see its docstring for the measurement).
SWEEPS = 5

SuggestFunc = Callable[[np.ndarray, np.ndarray], "float | tuple[float, str]"]


# The suggestions a sweep reports by name unless ``suggest_funcs`` says otherwise.
DEFAULT_SUGGEST_FUNCS: tuple[SuggestFunc, ...] = (
    past_steepest,
    valley,
    sustained_slope,
    slope_end,
    minimum_div10,
    steepest,
)
# The rule behind ``LRFinderResult.suggestion`` (what ``fine_tune`` and the CLI train at):
# of the rules measured in bench/lr_suggestion.py (paired training seeds), the one whose
# error shows no increase over today's EMA reading on any problem while, on every sweep,
# the raw loss is still clearly falling; valley 2/3 erred more on the digits MLP.
SUGGESTION_RULE: SuggestFunc = past_steepest


def fit_curve(lrs: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """The curve the suggestions read: ``zero_phase_smooth`` of the raw losses over log10(lr)
    with a bandwidth of ``FIT_DECADES``; NaN where the raw loss is not finite.

    Before the fit, the raw losses are capped at ``STOP_FACTOR`` times the starting level
    and passed through a 5-point centred median: a diverged batch can be 1000x the rest,
    and a straight-line fit through it swings far below the real curve (seen on the digits
    MLP: batch losses of 130+ at lr 4 bent the fit to -170). Both steps are zero-phase.
    """
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    out = np.full(losses.shape, np.nan)
    keep = np.isfinite(losses)
    if keep.sum() < 3:
        out[keep] = losses[keep]
        return out
    y, x = losses[keep], np.log10(lrs[keep])
    start = float(np.median(y[: max(1, len(y) // 10)]))
    cap = start + (STOP_FACTOR - 1) * max(abs(start), start - float(y.min()), 1e-12)
    per_decade = (len(x) - 1) / (x[-1] - x[0]) if x[-1] > x[0] else 0.0
    y = centred_median(np.minimum(y, cap), 5)
    out[keep] = zero_phase_smooth(y, FIT_DECADES * per_decade)
    return out


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

    ``suggestion`` and ``note``: ``SUGGESTION_RULE`` (``past_steepest``), whatever
    ``suggest_funcs`` holds; ``suggestions``: name -> LR of each of ``suggest_funcs``
    (default ``DEFAULT_SUGGEST_FUNCS``). Each function runs once, on ``fitted_losses``.
    """

    lrs: np.ndarray
    losses: np.ndarray  # raw loss of each batch
    smooth_losses: np.ndarray  # debiased EMA (beta 0.98): fastai's curve and the stop rule's
    stopped_early: bool
    suggest_funcs: InitVar[Sequence[SuggestFunc]] = ()
    fitted_losses: np.ndarray = field(init=False)  # fit_curve(lrs, losses): what is read
    suggestion: float = field(init=False)
    note: str = field(init=False)
    minimum_div10: float = field(init=False)
    steepest: float = field(init=False)
    suggestions: dict[str, float] = field(init=False)

    def __post_init__(self, suggest_funcs: Sequence[SuggestFunc]) -> None:
        funcs = check_suggest_funcs(suggest_funcs) or DEFAULT_SUGGEST_FUNCS
        fitted = fit_curve(self.lrs, self.losses)
        object.__setattr__(self, "fitted_losses", fitted)
        outputs: dict[int, float | tuple[float, str]] = {}  # id(function) -> what it gave
        for f in (*DEFAULT_SUGGEST_FUNCS, *funcs):
            if id(f) not in outputs:
                outputs[id(f)] = f(self.lrs, fitted)
        out = outputs[id(SUGGESTION_RULE)]
        lr, note = out if isinstance(out, tuple) else (out, suggest_name(SUGGESTION_RULE))
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
        """Loss vs LR (log scale), saved as PNG: the raw loss per batch, the zero-phase fit
        the suggestions were read from (with the three marked on it, and a line at the
        suggestion), and fastai's EMA for comparison."""
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, ".", color="0.6", ms=3, label="loss per batch (raw)")
        ax.plot(self.lrs, self.fitted_losses, "C0", label="zero-phase fit (suggestions read this)")
        ax.plot(self.lrs, self.smooth_losses, "C1--", lw=1, label="EMA 0.98 (fastai's; lags)")
        ax.axvline(self.suggestion, color="r", lw=0.8, alpha=0.6)
        x, fitted = np.log10(self.lrs), self.fitted_losses
        keep = np.isfinite(fitted)
        for lr, style, name in (
            (self.suggestion, "ro", f"suggestion ({suggest_name(SUGGESTION_RULE)})"),
            (self.minimum_div10, "g^", "minimum / 10"),
            (self.steepest, "ks", "steepest"),
        ):
            y = np.interp(np.log10(lr), x[keep], fitted[keep]) if keep.any() else np.nan
            ax.plot(lr, y, style, label=f"{name}: {lr:.1e}")
        # The divergence at the end can be 10x the rest: zoom on the part up to the minimum.
        low = int(np.argmin(np.where(keep, fitted, np.inf)))
        shown = np.concatenate([fitted[: low + 1], self.smooth_losses[: low + 1]])
        top, bottom = float(np.nanmax(np.where(np.isfinite(shown), shown, np.nan))), fitted[low]
        pad = 0.1 * max(top - bottom, 1e-3 * max(abs(top), 1e-12))
        ax.set_ylim(bottom - pad, top + 3 * pad)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend(fontsize="small")
        return save_figure(fig, path)

    def _repr_png_(self) -> bytes:
        """The plot inline in a notebook (fastcore_cv/display.py)."""
        from fastcore_cv.display import png_from

        return png_from(self.plot)


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

"""Per-batch hyper-parameter schedules: the one-cycle policy built from cosine pieces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastcore_cv.checks import check_int, check_number


def cos_anneal(start: float, end: float, pos: np.ndarray) -> np.ndarray:
    """Cosine from ``start`` (pos=0) to ``end`` (pos=1): slow at both ends, fast in the middle."""
    return end + (start - end) * (1 + np.cos(np.pi * np.asarray(pos, dtype=np.float64))) / 2


def combined_cos(
    pos: np.ndarray, pct_start: float, start: float, middle: float, end: float
) -> np.ndarray:
    """Cosine ``start -> middle`` over the first ``pct_start`` of training, then to ``end``."""
    pos = np.asarray(pos, dtype=np.float64)
    out = np.empty_like(pos)
    warm = pos < pct_start
    if pct_start > 0:
        out[warm] = cos_anneal(start, middle, pos[warm] / pct_start)
    rest = ~warm
    span = 1.0 - pct_start
    out[rest] = cos_anneal(middle, end, (pos[rest] - pct_start) / span) if span > 0 else middle
    return out


def one_cycle(
    n_iter: int,
    lr_max: float | Sequence[float],
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95),
) -> tuple[np.ndarray, np.ndarray | None]:
    """Learning rates (n_iter, n_groups) and momenta (n_iter,) for fastai's one-cycle policy.

    LR warms up from ``lr_max/div`` to ``lr_max`` then anneals to ``lr_max/div_final``;
    momentum moves the other way (high, low, high). Batch ``i`` sits at position ``i/n_iter``,
    as in fastai, so the last batch is close to but not exactly at the final value.
    """
    check_int(n_iter, "n_iter")
    div = check_number(div, "div", low=1e-12)
    div_final = check_number(div_final, "div_final", low=1e-12)
    pct_start = check_number(pct_start, "pct_start", low=0.0)
    if pct_start > 1:
        raise ValueError(f"pct_start: must be in [0, 1], got {pct_start}")
    peaks = np.atleast_1d(np.asarray(lr_max, dtype=np.float64))
    for p in peaks:
        check_number(p, "lr_max", low=0.0)
    pos = np.arange(n_iter) / n_iter
    shape = combined_cos(pos, pct_start, 1.0 / div, 1.0, 1.0 / div_final)
    lrs = shape[:, None] * peaks[None, :]
    if moms is None:
        return lrs, None
    if len(moms) != 3:
        raise ValueError(f"moms: expected (start, middle, end), got {moms!r}")
    m = [check_number(v, "moms", low=0.0) for v in moms]
    return lrs, combined_cos(pos, pct_start, *m)


def group_lrs(lr: float | Sequence[float] | slice, n_groups: int) -> np.ndarray:
    """One LR per parameter group: a number for all, a sequence (one each), or a slice.

    ``slice(lo, hi)`` spreads LRs geometrically from ``lo`` (first group, the body) to
    ``hi`` (last group, the head); ``slice(None, hi)`` gives ``hi/10`` to all but the last,
    as fastai's discriminative learning rates do.
    """
    if isinstance(lr, slice):
        hi = check_number(lr.stop, "lr", low=0.0)
        if lr.start is None:
            out = np.full(n_groups, hi / 10)
            out[-1] = hi
            return out
        lo = check_number(lr.start, "lr", low=0.0)
        return np.geomspace(lo, hi, n_groups) if n_groups > 1 else np.array([hi])
    if isinstance(lr, (list, tuple, np.ndarray)):
        if len(lr) != n_groups:
            raise ValueError(f"lr: got {len(lr)} learning rates for {n_groups} parameter groups")
        return np.array([check_number(v, "lr", low=0.0) for v in lr])
    return np.full(n_groups, check_number(lr, "lr", low=0.0))

"""The rules that read a learning rate off an LR finder curve (learner/lr_finder.py runs them
on its zero-phase fit). Each is ``f(lrs, losses) -> lr`` or ``(lr, note)``, takes plain
arrays, never indexes past the end and works on any curve with at least one finite point.

``sustained_slope`` is the lesson's "strongest downward slope that's sticking around for a
while"; ``slope_end`` the end of that steep stretch; ``valley`` fastai's newer rule (a point
part of the way down the longest descent); ``minimum_div10`` and ``steepest`` fastai's older
ones, kept for comparison.
"""

from __future__ import annotations

import numpy as np

# Slopes are measured over half a decade of LR. fastai's default sweep (100 points over 8
# decades) puts ~6 points in that window: wide enough that a wiggle left by the EMA cannot
# pass for a descent, narrow enough to resolve the steep part of a 2-3 decade valley
# (checked on the synthetic clean/noisy curves in tests/learner/test_lr_finder.py).
WINDOW_DECADES = 0.5
# A descent that lowers the loss by less than 2% of its typical level is treated as flat.
FLAT_DROP = 0.02
HOLD = 0.5  # slope_end: "still steep" = at least half the steepest slope
# valley: how far down the longest descent the suggestion sits, as a share of the loss that
# descent loses (half is the steepest point of a symmetric descent; fastai's valley also
# sits part-way down). 2/3 leaves a third of the drop to go. Measured (bench/lr_suggestion.py,
# RESULTS.md "LR finder suggestion"; 5 sweeps, 3 training seeds): 1/2 errs more (digits MLP
# 4.8%, above the range of today's EMA reading, 3.1-4.4%); 2/3 gives 4.2% (MLP) and 23.4%
# (digits head; today 20.3-25.4%), 0% on textures, and the raw loss there is still 0.25-0.48x
# the start loss above its minimum; 4/5 errs a little less on digits (3.8%, 23.0%) but its
# head leaves tests/test_examples.py's one unfrozen textures epoch at 20% error (limit 10%).
VALLEY_FRACTION = 2 / 3


def clean_curve(lrs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lrs`` and ``losses`` as float64 with the non-finite losses dropped; ValueError
    naming the argument when the curve cannot be read."""
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
    lrs, losses = clean_curve(lrs, losses)
    return float(lrs[np.argmin(losses)] / 10)


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest between two neighbouring points (noise-sensitive).

    Like fastai, the first 10% of a long curve is skipped (fastai: there the debiased EMA is
    still close to the raw, noisy batch losses).
    """
    lrs, losses = clean_curve(lrs, losses)
    skip = len(lrs) // 10 if len(lrs) >= 10 else 0
    lrs, losses = lrs[skip:], losses[skip:]
    if len(lrs) < 2:
        return float(lrs[0])
    grads = np.diff(losses) / np.diff(np.log10(lrs))
    return float(lrs[np.argmin(grads)])


def _window_slopes(lrs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """log10(lrs), the slope over each window of ``WINDOW_DECADES`` (window i spans points
    i..i+w) and w. Needs at least two points."""
    x = np.log10(lrs)
    per_decade = (len(lrs) - 1) / (x[-1] - x[0])
    w = int(np.clip(round(per_decade * WINDOW_DECADES), 1, max(1, (len(lrs) - 1) // 2)))
    return x, (losses[w:] - losses[:-w]) / (x[w:] - x[:-w]), w


def _fallback(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    if int(np.argmin(losses)) == 0:
        why = "the loss never fell below its first value: lower start_lr or check the model"
    else:
        why = "the loss curve is too flat to show a sustained downward slope"
    return minimum_div10(lrs, losses), f"{why}; fell back to minimum/10"


def _is_flat(losses: np.ndarray, drop: float) -> bool:
    level = max(float(np.median(np.abs(losses))), 1e-12)
    return drop < FLAT_DROP * level


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
    lrs, losses = clean_curve(lrs, losses)
    if len(lrs) >= 2:
        x, slopes, w = _window_slopes(lrs, losses)
        found = _steepest_window(x, slopes, w, losses)
        if found is not None:
            lr, start, end = found
            return lr, (
                f"steepest slope over {w} point(s) inside the longest descent "
                f"({lrs[start]:.2e} to {lrs[end]:.2e})"
            )
    return _fallback(lrs, losses)


def _steepest_window(
    x: np.ndarray, slopes: np.ndarray, w: int, losses: np.ndarray
) -> tuple[float, int, int] | None:
    """(LR at the centre of the steepest window inside the longest descent, the descent's
    first and last point), or None when nothing falls meaningfully. Window i spans points
    i..i+w of ``x`` = log10(lr); ``slopes`` holds each window's slope."""
    best = widest_descent(slopes < 0, x, w)
    if best is None:
        return None
    start, stop = best
    if _is_flat(losses, losses[start] - losses[stop - 1 + w]):
        return None
    i = start + int(np.argmin(slopes[start:stop]))
    return float(10 ** ((x[i] + x[i + w]) / 2)), start, stop - 1 + w


def slope_end(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The right end of the steep stretch: from ``sustained_slope``'s steepest window, the
    last window to its right whose slope is still at least ``HOLD`` x the steepest (the
    centre of that window). Larger than ``sustained_slope``, still where the loss falls
    clearly; an alternative for ``suggest_funcs`` (bench/lr_suggestion.py measures both)."""
    lrs, losses = clean_curve(lrs, losses)
    if len(lrs) >= 2:
        x, slopes, w = _window_slopes(lrs, losses)
        best = widest_descent(slopes < 0, x, w)
        if best is not None:
            i = j = best[0] + int(np.argmin(slopes[best[0] : best[1]]))
            while j + 1 < best[1] and slopes[j + 1] <= HOLD * slopes[i]:
                j += 1
            return float(10 ** ((x[j] + x[j + w]) / 2))
    return sustained_slope(lrs, losses)[0]


def valley(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    """``valley_at`` with ``VALLEY_FRACTION``: the rule ``suggest_funcs`` takes."""
    return valley_at(lrs, losses, VALLEY_FRACTION)


def valley_at(lrs: np.ndarray, losses: np.ndarray, fraction: float) -> tuple[float, str]:
    """fastai's valley idea, read off a smooth curve: the longest stretch (in decades) over
    which the loss falls from each point to the next, then the LR where the loss has lost
    ``fraction`` (0 < fraction < 1) of that stretch's drop (interpolated in log10(lr)).

    A long flat start adds decades to the stretch but no drop, so measuring the fraction in
    loss (not in LR, as fastai does) keeps it from pulling the point left. Falls back like
    ``sustained_slope`` on a flat or rising curve.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: expected a share between 0 and 1, got {fraction}")
    lrs, losses = clean_curve(lrs, losses)
    if len(lrs) >= 2:
        x = np.log10(lrs)
        best = widest_descent(np.diff(losses) < 0, x, 1)
        if best is not None:
            start, end = best[0], best[1]  # points start..end, falling all the way
            top, bottom = losses[start], losses[end]
            if not _is_flat(losses, top - bottom):
                target = top - fraction * (top - bottom)
                j = start + int(np.argmax(losses[start : end + 1] <= target))  # first at/below
                a = (losses[j - 1] - target) / (losses[j - 1] - losses[j])
                lr = float(10 ** (x[j - 1] + a * (x[j] - x[j - 1])))
                return lr, (
                    f"{fraction:.0%} of the way down the longest descent "
                    f"({lrs[start]:.2e} to {lrs[end]:.2e})"
                )
    return _fallback(lrs, losses)


def widest_descent(falling: np.ndarray, x: np.ndarray, w: int) -> tuple[int, int] | None:
    """[start, stop) of the run of True in ``falling`` (window i spans x[i]..x[i + w])
    spanning the most decades of LR; None if nothing falls."""
    best, best_span = None, 0.0
    start = None
    for i, down in enumerate(np.append(falling, False)):
        if down and start is None:
            start = i
        elif not down and start is not None:
            span = x[i - 1 + w] - x[start]
            if span > best_span:
                best, best_span = (start, i), span
            start = None
    return best


def valley_log_at(lrs: np.ndarray, losses: np.ndarray, fraction: float) -> tuple[float, str]:
    """``valley_at`` with the drop measured in log(loss): the LR where the longest descent has
    lost ``fraction`` of its log-loss drop. A cross-entropy descent has a long tail at low
    loss; in log terms that tail counts, so the point sits further down (right) than
    ``valley_at`` at the same fraction. Needs positive losses (else falls back to ``valley_at``)."""
    lrs, losses = clean_curve(lrs, losses)
    if np.all(losses > 0):
        lr, note = valley_at(lrs, np.log(losses), fraction)
        return lr, note.replace("descent", "descent (in log loss)", 1)
    return valley_at(lrs, losses, fraction)


def steepest_point(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where a smooth curve falls fastest in log10(lr) (between two neighbouring
    points of its longest descent, at their geometric middle); ``sustained_slope``'s value
    when nothing falls."""
    found = _steepest_in_descent(lrs, losses)
    return found if found is not None else sustained_slope(lrs, losses)[0]


def _steepest_in_descent(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """``sustained_slope``'s search with one-step windows (a smooth curve needs no longer)."""
    lrs, losses = clean_curve(lrs, losses)
    if len(lrs) < 2:
        return None
    x = np.log10(lrs)
    found = _steepest_window(x, np.diff(losses) / np.diff(x), 1, losses)
    return None if found is None else found[0]


# past_steepest: how far right of the fit's steepest point. Chosen on the digits MLP (the
# candidates x2 and x3): x3 lands within 0.07x the start loss of the raw minimum, where the
# loss has nearly stopped falling; x2 (0.3 decade right) still sits 0.16x above it.
STEEP_FACTOR = 2.0


def past_steepest(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    """``STEEP_FACTOR`` x the LR where the smooth curve falls fastest (``steepest_point``):
    past the steepest point, where the loss still falls clearly, without the EMA's lag.
    Falls back like ``sustained_slope`` (minimum/10, with its note) on a flat or rising curve."""
    lr = _steepest_in_descent(lrs, losses)
    if lr is None:
        return sustained_slope(lrs, losses)
    return STEEP_FACTOR * lr, f"{STEEP_FACTOR:g}x the steepest point of the fit ({lr:.2e})"

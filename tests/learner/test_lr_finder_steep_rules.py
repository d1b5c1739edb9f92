"""The candidate LR rules of bench/lr_suggestion.py on synthetic curves with known answers:
the fit's steepest point, ``past_steepest`` and the valley measured in log loss."""

import numpy as np
import pytest

from fastcore_cv.learner.lr_finder import fit_curve
from fastcore_cv.learner.lr_rules import (
    STEEP_FACTOR,
    past_steepest,
    steepest_point,
    sustained_slope,
    valley_at,
    valley_log_at,
)

LRS = np.geomspace(1e-7, 10, 100)
X = np.log10(LRS)
STEP = X[1] - X[0]  # 8/99 decades between points


def descent(centre: float, width: float = 0.4, depth: float = 1.5) -> np.ndarray:
    """A sigmoid descent in log10(lr) from 2 to 2 - depth: steepest exactly at 10**centre."""
    return 2.0 - depth / (1 + np.exp(-(X - centre) / width))


@pytest.mark.parametrize("centre", [-4.0, -2.5, -1.2])
def test_steepest_point_is_the_sigmoids_centre(centre):
    lr = steepest_point(LRS, descent(centre))
    # the steepest pair of neighbours straddles the centre: within half a step of it
    assert abs(np.log10(lr) - centre) <= STEP / 2 + 1e-9, (np.log10(lr), centre)
    lr2, note = past_steepest(LRS, descent(centre))
    assert lr2 == pytest.approx(STEEP_FACTOR * lr, rel=1e-12)
    assert "steepest point" in note


def test_past_steepest_is_steady_under_noise_read_as_lr_find_reads():
    """Batch-loss noise (sd 0.08, 20 seeds) read through fit_curve: the steepest point stays
    within 0.3 decade of the true one (1e-2)."""
    rng = np.random.default_rng(0)
    clean = descent(-2.0)
    for _ in range(20):
        raw = clean + rng.normal(0, 0.08, clean.shape)
        lr = steepest_point(LRS, fit_curve(LRS, raw))
        assert abs(np.log10(lr) + 2.0) < 0.3, lr


def test_steepest_point_falls_back_on_a_flat_curve():
    flat = np.full(LRS.shape, 1.0)
    assert steepest_point(LRS, flat) == sustained_slope(LRS, flat)[0]


@pytest.mark.parametrize("fraction", [0.5, 2 / 3])
def test_log_valley_is_the_valley_of_the_log_loss_and_sits_further_right(fraction):
    loss = descent(-2.0, depth=1.8)  # 2 -> 0.2: a long tail at low loss, as cross-entropy
    lr, note = valley_log_at(LRS, loss, fraction)
    assert lr == valley_at(LRS, np.log(loss), fraction)[0]
    assert "log loss" in note
    # in log terms the low tail counts: the same fraction sits further down the descent
    assert lr > valley_at(LRS, loss, fraction)[0]
    # solved exactly: log(2 - 1.8 s) = log 2 - fraction * (log 2 - log 0.2) at z = logit(s)
    target = np.exp(np.log(loss[0]) - fraction * (np.log(loss[0]) - np.log(loss[-1])))
    s = (2.0 - target) / 1.8
    want = -2.0 + 0.4 * np.log(s / (1 - s))
    assert abs(np.log10(lr) - want) < 0.02, (np.log10(lr), want)


def test_past_steepest_falls_back_like_the_lessons_rule():
    flat = np.full(LRS.shape, 1.0)
    assert past_steepest(LRS, flat) == sustained_slope(LRS, flat)
    rising = np.linspace(1.0, 3.0, 12)
    lr, note = past_steepest(LRS[:12], rising)
    assert lr == pytest.approx(LRS[0] / 10) and "minimum/10" in note

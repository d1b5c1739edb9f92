"""Temperature scaling and the "not sure" threshold (export/calibration.py), against float64
references: the fit recovers a known temperature, calibration error falls on a real
over-confident model, and the threshold is the smallest that meets the target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.export import calibration as cal


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@settings(max_examples=12, deadline=None)
@given(t_true=st.floats(0.3, 4.0), seed=st.integers(0, 2**32 - 1))
def test_the_fit_recovers_a_known_temperature(t_true, seed):
    """Labels drawn from softmax(z) (a calibrated model), the model reporting z * T: the
    maximum-likelihood 1/T lies within 6 standard errors of 1/T_true. The standard error is
    1 / sqrt(Fisher information), the information being sum_i Var_softmax(z_i)[z_i * T]
    at beta = 1/T (the NLL's second derivative in beta): a 6-sigma miss has odds ~1e-9."""
    rng = np.random.default_rng(seed)
    n, c = 4000, 6
    z = rng.normal(0, 2.0, (n, c))
    p = _softmax(z)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    logits = z * t_true
    t = cal.fit_temperature(logits, labels, "logits")
    var = (p * z**2).sum(1) - (p * z).sum(1) ** 2  # Var of logits * beta0 = Var of z
    se_beta = 1 / math.sqrt(np.sum(var * t_true**2))
    assert abs(1 / t - 1 / t_true) < 6 * se_beta
    # and it is the NLL's minimum (float64 reference: no neighbour is lower, beyond the
    # rounding of a mean of n terms of size ~|logits|)
    eps = 64 * np.finfo(np.float64).eps * float(np.abs(logits).max())
    f = cal.nll(logits, labels, 1 / t)
    for step in (1e-3, -1e-3):
        assert f <= cal.nll(logits, labels, (1 / t) * (1 + step)) + eps


def test_probabilities_in_equal_logits_up_to_a_constant():
    """T applied to log-probabilities (a graph with softmax inside) equals T on the logits."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (50, 4))
    probs = _softmax(z).astype(np.float32)
    for t in (0.5, 1.0, 2.5):
        want = _softmax(z / t)
        np.testing.assert_allclose(cal.probabilities(z, "logits", t), want, atol=1e-12)
        # from float32 probabilities: each log p carries ~eps32 relative error, scaled by 1/T
        got = cal.probabilities(probs, "probabilities", t)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=8 * np.finfo(np.float32).eps / min(t, 1))


def test_a_perfect_validation_set_leaves_the_temperature_at_one():
    """All right and separable: the NLL falls forever as T -> 0, which says nothing about new
    photos; T stays 1 instead of sharpening every answer to 100%."""
    z = np.array([[5.0, 0.0], [0.0, 4.0], [3.0, -1.0]])
    assert cal.fit_temperature(z, [0, 1, 0]) == 1.0


def test_calibration_error_falls_on_a_real_over_confident_model():
    """Softmax regression over-fitted (3000 steps, no regularisation) on 150 of scikit-learn's
    digits: T fitted on 750 others is > 1 and lowers the ECE and NLL on the 897 held out."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    w, b, onehot = np.zeros((64, 10)), np.zeros(10), np.eye(10)[y[:150]]
    for _ in range(3000):
        g = (_softmax(x[:150] @ w + b) - onehot) / 150
        w -= 2.0 * x[:150].T @ g
        b -= 2.0 * g.sum(0)
    z_cal, z_test, y_cal, y_test = x[150:900] @ w + b, x[900:] @ w + b, y[150:900], y[900:]
    t = cal.fit_temperature(z_cal, y_cal)
    assert t > 1.1  # over-confident: the fit softens it
    before = cal.ece(cal.probabilities(z_test, "logits"), y_test)
    after = cal.ece(cal.probabilities(z_test, "logits", t), y_test)
    assert after < 0.8 * before
    assert cal.nll(z_test, y_test, 1 / t) < cal.nll(z_test, y_test)


def _accuracy_at(conf: np.ndarray, right: np.ndarray, t: float) -> float:
    m = conf >= t
    return float(right[m].mean()) if m.any() else math.nan


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=60),
    target=st.sampled_from([0.5, 0.8, 0.9, 0.99, 1.0]),
)
def test_the_threshold_is_the_smallest_that_meets_the_target(data, target):
    """Brute force over every candidate (ties included: confidences on a grid of 21 values)."""
    conf = np.array([c / 20 for c, _ in data])
    right = np.array([r for _, r in data])
    t = cal.choose_threshold(conf, right, target)
    meets = [c for c in np.unique(conf) if _accuracy_at(conf, right, c) >= target]
    if meets:
        assert t == min(meets)
        assert _accuracy_at(conf, right, t) >= target
    else:  # nothing reaches it: nothing is accepted
        assert not (conf >= t).any()


def test_calibrate_reports_coverage_and_accuracy_on_accepted():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (500, 5))
    labels = (_softmax(z).cumsum(1) > rng.random((500, 1))).argmax(1)
    s = cal.calibrate(z, labels, "logits", 0.9)
    probs = cal.probabilities(z, "logits", s["temperature"])
    accepted = probs.max(1) >= s["threshold"]
    right = probs.argmax(1) == labels
    assert s["coverage"] == pytest.approx(accepted.mean())
    assert s["accuracy_accepted"] == pytest.approx(right[accepted].mean())
    assert s["accuracy_accepted"] >= 0.9
    assert 0 < s["coverage"] < 1 and s["target_accuracy"] == 0.9
    for bad in (0, 1.5, True, "0.9"):
        with pytest.raises(ValueError, match="target_accuracy"):
            cal.calibrate(z, labels, "logits", bad)

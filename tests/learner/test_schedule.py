"""One-cycle schedules: fastai's per-batch cosine shapes for LR and momentum."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.learner.schedule import combined_cos, cos_anneal, group_lrs, one_cycle


def reference_one_cycle(n, lr_max, div, div_final, pct, moms):
    """fastai's formula, written out point by point in plain Python."""

    def cos(start, end, p):
        return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2

    lrs, ms = [], []
    for i in range(n):
        p = i / n
        if p < pct:
            lrs.append(cos(lr_max / div, lr_max, p / pct))
            ms.append(cos(moms[0], moms[1], p / pct))
        else:
            lrs.append(cos(lr_max, lr_max / div_final, (p - pct) / (1 - pct)))
            ms.append(cos(moms[1], moms[2], (p - pct) / (1 - pct)))
    return np.array(lrs), np.array(ms)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    lr_max=st.floats(1e-5, 10),
    div=st.floats(1.5, 100),
    pct=st.floats(0.05, 0.95),
)
def test_matches_fastai_formula(n, lr_max, div, pct):
    lrs, ms = one_cycle(n, lr_max, div=div, div_final=1e5, pct_start=pct)
    ref_lrs, ref_ms = reference_one_cycle(n, lr_max, div, 1e5, pct, (0.95, 0.85, 0.95))
    np.testing.assert_allclose(lrs[:, 0], ref_lrs, rtol=1e-9)
    np.testing.assert_allclose(ms, ref_ms, rtol=1e-9)


def test_shape_of_the_cycle():
    lrs, ms = one_cycle(1000, 0.1)
    lr = lrs[:, 0]
    peak = int(np.argmax(lr))
    assert lr[0] == pytest.approx(0.1 / 25)
    assert peak == 250 and lr[peak] == pytest.approx(0.1)
    assert np.all(np.diff(lr[: peak + 1]) > 0) and np.all(np.diff(lr[peak:]) < 0)
    assert 0.1 / 1e5 < lr[-1] < 2 * 0.1 / 1e5  # the last batch sits just before the end
    assert ms[0] == pytest.approx(0.95) and ms[peak] == pytest.approx(0.85)
    assert int(np.argmin(ms)) == peak  # momentum is lowest where LR is highest


def test_per_group_peaks_scale_one_shape():
    lrs, _ = one_cycle(50, [1e-4, 1e-3, 1e-2])
    assert lrs.shape == (50, 3)
    np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 10)
    np.testing.assert_allclose(lrs[:, 2] / lrs[:, 0], 100)


@pytest.mark.parametrize("pct", [0.0, 1.0])
def test_extreme_pct_start_is_finite(pct):
    lrs, ms = one_cycle(20, 0.1, pct_start=pct)
    assert np.all(np.isfinite(lrs)) and np.all(np.isfinite(ms))
    if pct == 0.0:
        assert lrs[0, 0] == pytest.approx(0.1)  # no warm-up: starts at the peak
    else:
        assert np.all(np.diff(lrs[:, 0]) > 0)  # warm-up only


def test_no_momentum_schedule():
    _, ms = one_cycle(10, 0.1, moms=None)
    assert ms is None


def test_cos_pieces():
    assert cos_anneal(2.0, 1.0, 0.0) == pytest.approx(2.0)
    assert cos_anneal(2.0, 1.0, 1.0) == pytest.approx(1.0)
    assert cos_anneal(2.0, 1.0, 0.5) == pytest.approx(1.5)
    out = combined_cos(np.array([0.0, 0.5, 0.99]), 0.5, 1.0, 3.0, 0.0)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(3.0) and out[2] < 0.01


def test_group_lrs():
    np.testing.assert_allclose(group_lrs(0.1, 3), [0.1, 0.1, 0.1])
    np.testing.assert_allclose(group_lrs(slice(1e-4, 1e-2), 3), [1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(group_lrs(slice(None, 1e-2), 3), [1e-3, 1e-3, 1e-2])
    np.testing.assert_allclose(group_lrs([1, 2], 2), [1, 2])
    with pytest.raises(ValueError, match="lr"):
        group_lrs([1, 2, 3], 2)
    with pytest.raises(ValueError, match="lr"):
        group_lrs(-1.0, 1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_iter=0), "n_iter"),
        (dict(div=0), "div"),
        (dict(div_final=-1), "div_final"),
        (dict(pct_start=1.5), "pct_start"),
        (dict(pct_start=-0.1), "pct_start"),
        (dict(moms=(0.9, 0.8)), "moms"),
        (dict(lr_max=float("nan")), "lr_max"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = dict(n_iter=10, lr_max=0.1) | kwargs
    with pytest.raises((ValueError, TypeError), match=name):
        one_cycle(**args)

"""The LR finder: suggestions on synthetic curves, and the sweep on a real model."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fastcore_cv.learner import DataLoaders, Learner, LRFinderResult, set_seed
from fastcore_cv.learner.lr_finder import (
    SUGGESTION_RULE,
    fit_curve,
    median_of_sweeps,
    minimum_div10,
    slope_end,
    steepest,
    sustained_slope,
    valley,
)
from fastcore_cv.learner.lr_rules import VALLEY_FRACTION, past_steepest, valley_at
from fastcore_cv.learner.recorder import ema, zero_phase_smooth

LRS = np.geomspace(1e-7, 10, 100)
X = np.log10(LRS)


def valley_curve(centre=-2.0, width=0.5, depth=1.5):
    """Flat, then a sigmoid descent centred at 10**centre, then an explosion, cut as lr_find
    would cut it (smoothed loss above 4x the best)."""
    loss = (
        2.0
        - depth / (1 + np.exp(-(X - centre) / width))
        + np.expm1(np.clip(3 * (X - 0.3), 0, None))
    )
    stop = int(np.argmax(loss > 4 * loss.min())) or len(loss)
    return LRS[:stop], loss[:stop]


def test_clean_curve_suggests_the_steepest_sustained_descent():
    lrs, loss = valley_curve()
    lr, note = sustained_slope(lrs, loss)
    assert 10**-2.3 < lr < 10**-1.7  # the sigmoid is steepest at 1e-2
    assert "longest descent" in note
    assert minimum_div10(lrs, loss) == pytest.approx(lrs[np.argmin(loss)] / 10)


def test_noise_moves_the_suggestion_less_than_half_a_decade():
    lrs, loss = valley_curve()
    clean, _ = sustained_slope(lrs, fit_curve(lrs, loss))
    ours = []
    for seed in range(8):
        raw = loss + np.random.default_rng(seed).normal(0, 0.08, len(loss))
        ours.append(sustained_slope(lrs, fit_curve(lrs, raw))[0])  # read as lr_find reads
    # noise must not move our pick far from the noiseless pick.
    assert all(10**-0.5 < lr / clean < 10**0.5 for lr in ours)
    assert max(ours) / min(ours) < 3


def test_brief_steep_dip_is_ignored_but_fools_steepest():
    lrs, loss = valley_curve()
    loss = loss.copy()
    dip = np.argmin(np.abs(X - (-5)))
    loss[dip : dip + 2] -= 0.4  # a sharp two-point dip at 1e-5: steep but not sustained
    lr, _ = sustained_slope(lrs, loss)
    assert 10**-2.3 < lr < 10**-1.7
    assert steepest(lrs, loss) < 1e-4  # the single-step rule jumps into the dip


def test_short_curve_of_five_points_never_index_errors():
    lrs = np.geomspace(1e-7, 10, 5)
    for loss in ([1.0, 0.9, 0.5, 0.4, 3.0], [1.0, 1.1, 1.2, 1.3, 1.4], [1.0] * 5):
        for rule in (sustained_slope, valley):
            lr, note = rule(lrs, np.array(loss))
            assert lrs[0] / 10 <= lr <= lrs[-1] and note
        assert np.isfinite(steepest(lrs, np.array(loss)))


def test_flat_curve_falls_back_and_says_so():
    rng = np.random.default_rng(0)
    loss = 1.0 + rng.normal(0, 1e-4, len(LRS))
    lr, note = sustained_slope(LRS, loss)
    assert "flat" in note and lr == pytest.approx(minimum_div10(LRS, loss))


def test_diverging_immediately_points_below_the_sweep():
    loss = np.exp(np.linspace(0, 1.3, 12))  # rises from the first step, stops at ~4x
    lrs = LRS[:12]
    lr, note = sustained_slope(lrs, loss)
    assert lr == pytest.approx(lrs[0] / 10)
    assert "never fell" in note and "start_lr" in note


@pytest.mark.parametrize("fraction", [0.5, 2 / 3, 0.8])
def test_valley_sits_the_fraction_of_the_way_down_the_longest_descent(fraction):
    """The clean sigmoid falls from the first point to the start of the explosion: the
    valley point is where it has lost ``fraction`` of that drop (solved exactly here)."""
    centre, width, depth = -2.0, 0.5, 1.5
    lrs, loss = valley_curve(centre, width, depth)
    end = int(np.argmax(np.diff(loss) >= 0))  # the last point of the descent
    target = loss[0] - fraction * (loss[0] - loss[end])
    s = (2.0 - target) / depth  # 2 - depth * sigmoid(z) = target
    want = centre + width * np.log(s / (1 - s))
    lr, note = valley_at(lrs, loss, fraction)
    # linear interpolation between points 8/99 decades apart, on a curve this smooth
    assert abs(np.log10(lr) - want) < 0.01, (np.log10(lr), want)
    assert f"{fraction:.0%} of the way down" in note
    assert valley(lrs, loss) == valley_at(lrs, loss, VALLEY_FRACTION)


def test_valley_ignores_a_brief_dip_and_is_steady_under_noise():
    lrs, loss = valley_curve()
    clean, _ = valley(lrs, loss)
    dipped = loss.copy()
    dip = np.argmin(np.abs(X - (-5)))
    dipped[dip : dip + 2] -= 0.4  # breaks the descent at 1e-5: the longer part still wins
    # ... and starts just after the dip, a hair lower than the sweep's first loss
    assert valley(lrs, dipped)[0] == pytest.approx(clean, rel=0.02)
    noisy = []
    for seed in range(8):
        raw = loss + np.random.default_rng(seed).normal(0, 0.08, len(loss))
        noisy.append(valley(lrs, fit_curve(lrs, raw))[0])  # read as lr_find reads
    assert all(10**-0.5 < lr / clean < 10**0.5 for lr in noisy), noisy
    assert max(noisy) / min(noisy) < 3, noisy


def test_valley_falls_back_like_the_lessons_rule():
    flat = 1.0 + np.random.default_rng(0).normal(0, 1e-4, len(LRS))
    assert valley(LRS, flat) == sustained_slope(LRS, flat)
    rising = np.exp(np.linspace(0, 1.3, 12))
    lr, note = valley(LRS[:12], rising)
    assert lr == pytest.approx(LRS[0] / 10) and "never fell" in note
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="fraction"):
            valley_at(LRS, flat, bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3) | st.just(float("nan")), min_size=1, max_size=12))
def test_any_short_curve_gives_a_finite_suggestion_in_range(values):
    lrs = np.geomspace(1e-7, 10, len(values))
    loss = np.array(values)
    if not np.isfinite(loss).any():
        with pytest.raises(ValueError, match="losses"):
            sustained_slope(lrs, loss)
        return
    for rule in (sustained_slope, valley, slope_end):
        out = rule(lrs, loss)
        assert lrs[0] / 10 <= (out[0] if isinstance(out, tuple) else out) <= lrs[-1], rule
    assert lrs[0] / 10 <= steepest(lrs, loss) <= lrs[-1]


def test_bad_curves_name_the_argument():
    with pytest.raises(ValueError, match="lrs"):
        sustained_slope(np.array([1e-3, 1e-4]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="losses"):
        minimum_div10(np.array([1e-3, 1e-2]), np.array([1.0]))


# -- the sweep on a real model ---------------------------------------------------------------


def make_learner(seed=0, bn=True, **kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    dls = DataLoaders.from_tensors(x[:320], y[:320], x[320:], y[320:], bs=32)
    set_seed(seed)
    layers = [nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)]
    model = nn.Sequential(*(layers if bn else [layers[0], layers[2], layers[4]]))
    return Learner(model, dls, progress="silent", **kw)


def test_model_and_optimizer_are_restored_exactly():
    learn = make_learner()
    learn.fit(1, 0.05)  # so the optimizer has state (moments, steps) to disturb
    model_before = copy.deepcopy(learn.model.state_dict())
    opt_before = copy.deepcopy(learn.opt.state_dict())
    result = learn.lr_find(num_it=30)
    assert len(result.lrs) > 5
    for k, v in learn.model.state_dict().items():  # weights and BatchNorm running stats
        assert torch.equal(v, model_before[k]), k
    opt_after = learn.opt.state_dict()
    assert opt_after["param_groups"] == opt_before["param_groups"]
    for k, state in opt_before["state"].items():
        assert state.keys() == opt_after["state"][k].keys()
        for key, value in state.items():  # the default AdamW: step, exp_avg, exp_avg_sq
            assert torch.equal(opt_after["state"][k][key], value), key


def test_lr_find_then_fit_trains_exactly_like_fit_alone():
    a = make_learner(seed=1)
    set_seed(5)
    a.fit(2, 0.05)
    b = make_learner(seed=1)
    set_seed(5)
    b.lr_find(num_it=20)
    assert b.opt is None  # created for the sweep, then dropped again
    b.fit(2, 0.05)
    assert a.recorder.history.batch_losses == b.recorder.history.batch_losses


def test_same_seed_same_curve():
    r1 = make_learner().lr_find(num_it=40, seed=3)
    r2 = make_learner().lr_find(num_it=40, seed=3)
    r3 = make_learner().lr_find(num_it=40, seed=4)
    np.testing.assert_array_equal(r1.losses, r2.losses)
    assert r1.suggestion == r2.suggestion
    assert not np.array_equal(r1.losses[:10], r3.losses[:10])


def test_sweep_shape_and_divergence_stop():
    learn = make_learner(bn=False)
    r = learn.lr_find(start_lr=1e-4, end_lr=1e4, num_it=60)
    assert isinstance(r, LRFinderResult) and r.stopped_early and len(r.lrs) < 60
    assert r.lrs[0] == pytest.approx(1e-4)
    np.testing.assert_allclose(np.diff(np.log(r.lrs)), np.log(1e8) / 59)
    assert not np.isfinite(r.smooth_losses[-1]) or r.smooth_losses[-1] > 4 * r.smooth_losses.min()
    assert r.lrs[0] / 10 <= r.suggestion < r.lrs[-1]
    assert "suggestion" in repr(r)


def test_more_iterations_than_batches_cycles_the_data():
    learn = make_learner(bn=False)  # 10 batches per epoch
    r = learn.lr_find(start_lr=1e-6, end_lr=1e-3, num_it=25)
    assert len(r.lrs) == 25 and not r.stopped_early


def test_plot_writes_a_png(tmp_path):
    r = make_learner().lr_find(num_it=30)
    path = r.plot(tmp_path / "sub" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_short_curve_ending_in_nan(tmp_path):
    lrs = np.geomspace(1e-3, 1.0, 5)
    r = LRFinderResult(
        lrs, np.array([1, 0.8, 0.5, 2, np.nan]), np.array([1, 0.9, 0.7, 1.1, np.nan]), True
    )
    assert (
        r.suggestion < 1.0
        and r.plot(tmp_path / "short.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_it=4), "num_it"),
        (dict(num_it=0), "num_it"),
        (dict(start_lr=0.0), "start_lr"),
        (dict(start_lr=1.0, end_lr=0.5), "end_lr"),
    ],
)
def test_bad_sweep_arguments(kwargs, name):
    learn = make_learner()
    with pytest.raises(ValueError, match=name):
        learn.lr_find(**kwargs)
    assert learn.opt is None


def test_num_it_of_five_works_and_type_is_checked():
    learn = make_learner()
    assert len(learn.lr_find(num_it=5, end_lr=1e-3).lrs) == 5
    with pytest.raises(TypeError, match="num_it"):
        learn.lr_find(num_it=5.0)


def test_empty_training_data_is_named(mlp):
    learn = Learner(mlp(), ([], None), progress="silent")
    with pytest.raises(ValueError, match="dls.train"):
        learn.lr_find()


# -- suggestion functions and the median of sweeps -------------------------------------------


def middle_of_the_sweep(lrs, losses):
    """A user's own rule: any f(lrs, losses) -> lr."""
    return float(lrs[len(lrs) // 2])


def test_suggest_funcs_are_reported_by_name_and_suggestion_stays_the_default_rule():
    default = make_learner().lr_find(num_it=40, seed=3)
    names = {"past_steepest", "valley", "sustained_slope", "slope_end", "minimum_div10"}
    names.add("steepest")
    assert set(default.suggestions) == names
    rule = SUGGESTION_RULE.__name__
    assert default.suggestions[rule] == default.suggestion
    r = make_learner().lr_find(num_it=40, seed=3, suggest_funcs=(steepest, middle_of_the_sweep))
    assert list(r.suggestions) == ["steepest", "middle_of_the_sweep"]
    assert r.suggestions["steepest"] == steepest(r.lrs, r.fitted_losses) == default.steepest
    assert r.suggestions["middle_of_the_sweep"] == r.lrs[len(r.lrs) // 2]
    # The default rule stays the suggestion, with the very same number, whatever is asked.
    assert r.suggestion == default.suggestion == SUGGESTION_RULE(r.lrs, r.fitted_losses)[0]
    assert r.note == SUGGESTION_RULE(r.lrs, r.fitted_losses)[1]


def test_bad_suggest_funcs_are_named():
    with pytest.raises(TypeError, match="suggest_funcs"):
        make_learner().lr_find(num_it=10, suggest_funcs=("valley",))


def test_median_of_sweeps_is_the_median_of_seeded_sweeps():
    lr, results = median_of_sweeps(make_learner(), sweeps=3)
    alone = [make_learner().lr_find(seed=s).suggestion for s in range(3)]
    assert [r.suggestion for r in results] == alone
    assert lr == float(np.median(alone))
    with pytest.raises(ValueError, match="sweeps"):
        median_of_sweeps(make_learner(), sweeps=0)


def test_suggest_funcs_with_one_name_are_refused_before_the_sweep():
    """Two functools.partial are both named "partial": one would silently hide the other."""
    import functools

    learn = make_learner()
    funcs = (functools.partial(steepest), functools.partial(minimum_div10))
    with pytest.raises(ValueError, match="suggest_funcs: 2 functions are named 'partial'"):
        learn.lr_find(num_it=10, suggest_funcs=funcs)
    assert learn.opt is None  # refused before anything ran


def test_each_suggestion_function_runs_once_and_only_values_are_kept():
    calls = []

    def counted_steepest(lrs, losses):
        calls.append(1)
        return steepest(lrs, losses)

    lrs = np.geomspace(1e-4, 1.0, 40)
    losses = 2.0 - np.tanh(np.linspace(-3, 3, 40))
    r = LRFinderResult(lrs, losses, losses, False, (counted_steepest,))
    fitted = fit_curve(lrs, losses)
    assert len(calls) == 1 and r.suggestions == {"counted_steepest": steepest(lrs, fitted)}
    assert "suggest_funcs" not in vars(r)  # names -> values only, no functions kept
    default = LRFinderResult(lrs, losses, losses, False)
    assert default.suggestions == {
        "past_steepest": past_steepest(lrs, fitted)[0],
        "valley": valley(lrs, fitted)[0],
        "sustained_slope": sustained_slope(lrs, fitted)[0],
        "slope_end": slope_end(lrs, fitted),
        "minimum_div10": minimum_div10(lrs, fitted),
        "steepest": steepest(lrs, fitted),
    }
    assert (default.minimum_div10, default.steepest) == (r.minimum_div10, r.steepest)


# -- the curve the suggestions read: zero-phase, no lag ----------------------------------------


def dense_local_fit(y, bandwidth):
    """float64 reference of recorder.zero_phase_smooth: a weighted least-squares line at
    each point (Gaussian weights, cut at 3 sd), solved one point at a time."""
    n, half = len(y), int(np.ceil(3 * bandwidth))
    out = np.empty(n)
    for i in range(n):
        j = np.arange(max(0, i - half), min(n, i + half + 1))
        w = np.exp(-0.5 * ((j - i) / bandwidth) ** 2)
        a = np.stack([np.ones(len(j)), j - i], 1)
        out[i] = np.linalg.lstsq(a * np.sqrt(w)[:, None], y[j] * np.sqrt(w), rcond=None)[0][0]
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-100, 100), min_size=3, max_size=60),
    st.floats(0.3, 8.0),
)
def test_zero_phase_smooth_is_a_local_line_fit(values, bandwidth):
    y = np.array(values)
    got = zero_phase_smooth(y, bandwidth)
    # sums of up to ~50 terms of |y| <= 100 in float64, then one 2x2 solve
    scale = max(1.0, float(np.abs(y).max()))
    np.testing.assert_allclose(got, dense_local_fit(y, bandwidth), atol=1e-9 * scale)


def test_a_straight_line_passes_through_unchanged():
    line = np.linspace(3.0, -1.0, 40)
    np.testing.assert_allclose(zero_phase_smooth(line, 4.0), line, atol=1e-12)


def test_the_fit_has_no_lag_where_the_ema_does():
    """A sigmoid descent steepest at 1e-2: the steepest point of the zero-phase fit (over
    neighbouring points, and the lesson's half-decade rule read off it) lands within 1.6x
    of it for every noise seed; read off fastai's EMA the rule lands 4x or more to the
    right (the EMA's ~50-point memory shifts the whole descent)."""
    lrs, loss = valley_curve(centre=-2.0)
    for seed in range(8):
        raw = loss + np.random.default_rng(seed).normal(0, 0.03, len(loss))
        new = LRFinderResult(lrs, raw, ema(raw), False)
        fit = new.fitted_losses
        steepest_fit = lrs[np.argmin(np.gradient(fit, np.log10(lrs)))]
        assert 10**-0.2 < steepest_fit / 1e-2 < 10**0.2, seed
        assert 10**-0.2 < sustained_slope(lrs, fit)[0] / 1e-2 < 10**0.2, seed
        old, _ = sustained_slope(lrs, new.smooth_losses)
        assert old / 1e-2 > 4, seed


def test_a_diverged_tail_does_not_bend_the_fit():
    lrs, loss = valley_curve()
    raw = loss.copy()
    raw[-4:] = [50.0, 200.0, 900.0, 4000.0]  # the last batches blow up, as real sweeps do
    fitted = fit_curve(lrs, raw)
    assert fitted.min() > loss.min() - 0.1  # no swing below the real curve
    assert 10**-2.3 < sustained_slope(lrs, fitted)[0] < 10**-1.7

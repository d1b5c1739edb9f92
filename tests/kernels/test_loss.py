"""Softmax cross-entropy, log-softmax, softmax and argmax against float64 NumPy and torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcore_cv
from fastcore_cv.kernels.loss import argmax, log_softmax, softmax, softmax_cross_entropy

# Class counts: 1, primes, and lengths around the 64-logit vector step up to ~1000 classes.
# In float32, 31, 63, 97, 100, 127, 307 and 701 take the padded kernel (long remainder
# mod 64; 307 and 701 with fewer rows per block), the others the direct one.
CLASSES = [1, 2, 3, 7, 10, 13, 31, 63, 64, 65, 97, 100, 127, 128, 257, 307, 701, 1000, 1009]


# Tolerances, in units of the dtype's eps. Every row is computed from the shifted logits
# x - max. Each is rounded at most once (eps relative), and exactly (Sterbenz) for the
# logits within a factor 2 of the max, which dominate the exp-sum; with label smoothing the
# far ones enter too, linearly through sum_j (x_j - max), each off by eps |x_j - max|: a
# relative error of the smoothing term mean_j (log_s - (x_j - max)) >= mean_j |x_j - max|,
# not exact, but within the same eps bound of the loss. So what a row's error
# grows with is its loss |L|, not the logits' magnitude M (a float32 log-sum-exp formed as
# max + log(sum) would carry eps * M: 1e-3 at M = 1e4, see the torch/NumPy test below).
# The row sums (of exp, and of x - max for label smoothing) are sums of same-sign terms,
# which err by at most (longest addition chain) * eps relative; they run in vectors of
# 64 bytes (16 float32 lanes, 8 float64), so the chain is ~C / lanes plus the lanes'
# reduction. Add the exp's 1.4 ulp, the log and the final rounding: 8 + C / lanes.
# Probabilities inherit the same relative error, so the gradient (entries p - q in [-1, 1])
# errs by as many eps absolute, times the 1 / N of 'mean'. torch's kernels obey the same
# bound (measured: <= 12 eps at C = 1009); our result vs torch's is allowed both.
def row_eps(c: int, dtype) -> float:
    """Bound of a row's relative error (loss) / absolute error (probabilities), in eps."""
    lanes = 64 // np.dtype(dtype).itemsize
    return 8 + c / lanes


def loss_tolerance(x, t, reduction, eps_smooth):
    """Absolute tolerance on the loss: row_eps * eps * (1 + |L_row|), reduced like the loss,
    plus the float64 sum over rows (N terms of one sign)."""
    rows, _ = reference(x, t, "none", eps_smooth)
    eps = np.finfo(x.dtype).eps
    per_row = row_eps(x.shape[1], x.dtype) * eps * (1 + np.abs(rows))
    if reduction == "none":
        return per_row
    scale = 1 / len(rows) if reduction == "mean" else 1.0
    return scale * (per_row.sum() + len(rows) * np.finfo(np.float64).eps * np.abs(rows).sum())


def reference(x, t, reduction, eps):
    """float64 NumPy cross-entropy and gradient, written from the definition."""
    x = x.astype(np.float64)
    n, c = x.shape
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    onehot = np.zeros_like(x)
    onehot[np.arange(n), t] = 1.0
    loss = -(1 - eps) * logp[np.arange(n), t] - eps * logp.mean(axis=1)
    grad = np.exp(logp) - ((1 - eps) * onehot + eps / c)
    if reduction == "mean":
        return loss.mean(), grad / n
    if reduction == "sum":
        return loss.sum(), grad
    return loss, grad


def torch_xent(x, t, reduction, eps):
    """torch's loss and the gradient of loss.backward(ones) (a training step's gradient)."""
    xt = torch.from_numpy(x.copy()).requires_grad_()
    loss = F.cross_entropy(xt, torch.from_numpy(t), reduction=reduction, label_smoothing=eps)
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), xt.grad.numpy()


def random_case(rng, n, c, dtype, magnitude):
    x = (rng.standard_normal((n, c)) * magnitude).astype(dtype)
    t = rng.integers(0, c, size=n)
    return x, t


@settings(max_examples=60, deadline=None)
@given(
    n=st.sampled_from([1, 2, 3, 5, 17, 64, 101, 300]),
    c=st.sampled_from(CLASSES),
    dtype=st.sampled_from([np.float32, np.float64]),
    magnitude=st.sampled_from([1.0, 30.0, 1e4]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    eps=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_cross_entropy_matches_float64_reference_and_torch(
    n, c, dtype, magnitude, reduction, eps, seed
):
    x, t = random_case(np.random.default_rng(seed), n, c, dtype, magnitude)
    loss, grad = softmax_cross_entropy(x, t, reduction, eps)
    assert grad.dtype == dtype and grad.shape == (n, c)
    assert np.asarray(loss).dtype == dtype
    assert np.shape(loss) == ((n,) if reduction == "none" else ())
    ltol = loss_tolerance(x, t, reduction, eps)
    # gradient entries are p - q in [-1, 1], divided by n for 'mean'
    gtol = row_eps(c, dtype) * np.finfo(dtype).eps / (n if reduction == "mean" else 1)
    ref_loss, ref_grad = reference(x, t, reduction, eps)
    assert np.all(np.abs(np.asarray(loss, np.float64) - ref_loss) <= ltol)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=gtol)
    t_loss, t_grad = torch_xent(x, t, reduction, eps)
    # torch's result carries its own error of the same bound: compare within both
    assert np.all(np.abs(np.asarray(loss, np.float64) - t_loss) <= 2 * ltol)
    np.testing.assert_allclose(grad, t_grad, rtol=0, atol=gtol * 2)


@settings(max_examples=20, deadline=None)
@given(
    n=st.sampled_from([1, 5, 64]),
    c=st.sampled_from([2, 10, 100, 1000]),
    eps=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_large_float32_logits_are_no_worse_than_torch_or_numpy(n, c, eps, seed):
    """Logits of size 1e4: each of our float32 losses is no further from the float64 truth
    than torch's float32 one, plus a slack of two roundings, and our worst error is no worse
    than that of a float32 NumPy log-sum-exp (error ~eps * M) plus the same slack.
    With label smoothing a float32 sum of the raw logits was 500x worse than torch."""
    x, t = random_case(np.random.default_rng(seed), n, c, np.float32, 1e4)
    truth, _ = reference(x, t, "none", eps)
    ours, _ = softmax_cross_entropy(x, t, "none", eps)
    theirs, _ = torch_xent(x, t, "none", eps)
    m = x.max(axis=1, keepdims=True)
    logp32 = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))  # all float32
    naive = -(1 - eps) * logp32[np.arange(n), t] - eps * logp32.mean(axis=1)
    slack = 4 * np.finfo(np.float32).eps * (1 + np.abs(truth))  # two roundings of each
    err = np.abs(ours - truth)
    assert np.all(err <= np.abs(theirs - truth) + slack)
    assert err.max() <= np.abs(naive - truth).max() + slack.max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c", [(1, 1), (300, 10), (300, 100), (50, 307), (40, 1000), (7, 1009)])
def test_one_and_two_threads_give_identical_results(dtype, n, c):
    # (300, 100) etc. run the parallel kernel with 2 threads, the serial one with 1
    x, t = random_case(np.random.default_rng(n * c), n, c, dtype, 5.0)
    try:
        fastcore_cv.set_num_threads(1)
        one = softmax_cross_entropy(x, t, "mean", 0.1)
        fastcore_cv.set_num_threads(2)
        two = softmax_cross_entropy(x, t, "mean", 0.1)
    finally:
        fastcore_cv.set_num_threads(fastcore_cv.threads.available_cores())
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])


def test_single_class_has_zero_loss_and_gradient():
    loss, grad = softmax_cross_entropy(np.array([[3.0], [-2.0]]), np.array([0, 0]), "sum", 0.1)
    assert loss == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def test_non_contiguous_logits_are_copied_not_misread():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 30))
    t = rng.integers(0, 15, size=20)
    view = x[:, ::2]
    loss, grad = softmax_cross_entropy(view, t)
    ref_loss, ref_grad = reference(view, t, "mean", 0.0)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-15)


INF, NAN = np.inf, np.nan
SPECIAL_ROWS = [
    [0.0, -INF, 1.0, 2.0],  # -inf logit: probability 0
    [-INF, -INF, -INF, -INF],  # all -inf: NaN in torch
    [INF, 0.0, 1.0, 2.0],  # +inf: NaN
    [NAN, 0.0, 1.0, 2.0],  # NaN first
    [0.0, 1.0, NAN, 2.0],  # NaN later
    [-INF, 5.0, -INF, -INF],  # one finite logit
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("target", [0, 1])
@pytest.mark.parametrize("row", SPECIAL_ROWS)
def test_inf_and_nan_logits_behave_like_torch(dtype, eps, target, row):
    x = np.array([row, [1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    t = np.array([target, 2])
    for reduction in ("none", "mean"):
        loss, grad = softmax_cross_entropy(x, t, reduction, eps)
        t_loss, t_grad = torch_xent(x, t, reduction, eps)
        np.testing.assert_allclose(loss, t_loss, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(grad, t_grad, rtol=1e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minus_inf_padding_in_long_rows_matches_torch(dtype):
    # masked-out classes as -inf in rows long enough for the vector paths (incl. padded)
    rng = np.random.default_rng(1)
    for c in (100, 1000):
        x, t = random_case(rng, 50, c, dtype, 3.0)
        x[:, 1::3] = -np.inf
        t = (t // 3) * 3  # targets on finite logits
        for eps in (0.0, 0.1):
            loss, grad = softmax_cross_entropy(x, t, "none", eps)
            t_loss, t_grad = torch_xent(x, t, "none", eps)
            np.testing.assert_allclose(loss, t_loss, rtol=1e-5)
            np.testing.assert_allclose(grad, t_grad, atol=2e-6)


# ---------------------------------------------------------------- log_softmax / softmax


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(1,), (7,), (1000,), (1, 1), (3, 1), (5, 13), (17, 100), (64, 1009)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    magnitude=st.sampled_from([1.0, 1e4]),
    axis=st.sampled_from([-1, 0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_log_softmax_and_softmax_match_float64_reference(shape, dtype, magnitude, axis, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) * magnitude).astype(dtype)
    x64 = x.astype(np.float64)
    z = x64 - x64.max(axis=axis, keepdims=True)
    ref = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    # log p = (x - max) - log(sum): the error of the log of the sum is absolute whatever |x|
    # is, that of x - max relative to log p (the loss bound of row_eps, per entry)
    bound = row_eps(x.shape[axis], dtype) * np.finfo(dtype).eps
    got = log_softmax(x, axis=axis)
    assert got.dtype == dtype and got.shape == x.shape
    assert np.all(np.abs(got - ref) <= bound * (1 + np.abs(ref)))
    np.testing.assert_allclose(softmax(x, axis=axis), np.exp(ref), rtol=0, atol=bound)
    t_ref = torch.log_softmax(torch.from_numpy(x), dim=axis).numpy()
    assert np.all(np.abs(got - t_ref) <= 2 * bound * (1 + np.abs(ref)))


def test_log_softmax_of_minus_inf_and_nan_like_torch():
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf] * 3, [np.nan, 1.0, 2.0]], dtype=np.float32)
    want = torch.log_softmax(torch.from_numpy(x), dim=-1).numpy()
    np.testing.assert_allclose(log_softmax(x), want, equal_nan=True)
    want = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    np.testing.assert_allclose(softmax(x), want, equal_nan=True)


# ---------------------------------------------------------------- argmax


@settings(max_examples=50, deadline=None)
@given(
    shape=st.sampled_from([(1,), (9,), (1, 1), (4, 1), (1, 4), (13, 7), (64, 1000)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    axis=st.sampled_from([-1, 0, 1]),
    nan_fraction=st.sampled_from([0.0, 0.05, 0.5]),
    seed=st.integers(0, 2**31 - 1),
)
def test_argmax_matches_numpy_with_ties_and_nan(shape, dtype, axis, nan_fraction, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # few distinct values: many ties
    x[rng.random(shape) < nan_fraction] = np.nan
    if axis == 1 and x.ndim == 1:
        axis = 0
    got = argmax(x, axis=axis)
    want = np.argmax(x, axis=axis)
    assert np.asarray(got).dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_argmax_of_1d_input_is_a_scalar():
    got = argmax(np.array([1.0, 5.0, 5.0, -np.inf]))
    assert np.ndim(got) == 0 and got == 1


# ---------------------------------------------------------------- bad inputs

X = np.zeros((4, 3), np.float32)
T = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(targets=np.array([0, 1, 3, 0])), ValueError, "targets"),
        (dict(targets=np.array([0, -1, 2, 0])), ValueError, "targets"),
        (dict(targets=T.astype(np.float32)), TypeError, "targets"),
        (dict(targets=T[:3]), ValueError, "targets"),
        (dict(targets=T.reshape(2, 2)), ValueError, "targets"),
        (dict(targets=[0, 1, 2, 0]), TypeError, "targets"),
        (dict(logits=X.astype(np.int64)), TypeError, "logits"),
        (dict(logits=X.astype(np.float16)), TypeError, "logits"),
        (dict(logits=X[0]), ValueError, "logits"),
        (dict(logits=X[None]), ValueError, "logits"),
        (dict(logits=X[:0], targets=T[:0]), ValueError, "logits"),
        (dict(logits=X.tolist()), TypeError, "logits"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(reduction=None), ValueError, "reduction"),
        (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(label_smoothing=np.nan), ValueError, "label_smoothing"),
        (dict(label_smoothing="0.1"), TypeError, "label_smoothing"),
    ],
)
def test_cross_entropy_rejects_bad_inputs_naming_the_argument(kwargs, error, name):
    args = dict(logits=X, targets=T, reduction="mean", label_smoothing=0.0) | kwargs
    with pytest.raises(error, match=name):
        softmax_cross_entropy(**args)


@pytest.mark.parametrize("fn", [log_softmax, softmax, argmax])
@pytest.mark.parametrize(
    "x, axis, error, name",
    [
        (np.zeros((2, 2, 2)), -1, ValueError, "x"),
        (np.zeros((2, 2), np.int32), -1, TypeError, "x"),
        (np.zeros((0, 3)), -1, ValueError, "x"),
        (np.zeros((2, 3)), 2, ValueError, "axis"),
        (np.zeros(3), 1, ValueError, "axis"),
        (np.zeros((2, 3)), -3, ValueError, "axis"),
    ],
)
def test_row_functions_reject_bad_inputs_naming_the_argument(fn, x, axis, error, name):
    with pytest.raises(error, match=name):
        fn(x, axis=axis)


def test_label_smoothing_edges_zero_and_one_are_allowed():
    x = np.array([[1.0, 2.0, 3.0]])
    for eps in (0.0, 1.0):
        loss, grad = softmax_cross_entropy(x, np.array([1]), "mean", eps)
        t_loss, t_grad = torch_xent(x, np.array([1]), "mean", eps)
        np.testing.assert_allclose(loss, t_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, t_grad, atol=1e-15)

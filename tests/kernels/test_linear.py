"""linear / linear_backward against torch autograd (F.linear + relu), float64 and float32."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.kernels.linear import linear, linear_backward

# Sizes: 1, primes, and non-multiples of the GEMM tiles (6 rows x 64/32 columns, KC = 256).
SIZES = [1, 2, 3, 7, 10, 13, 31, 64, 97, 257]


# A random layer: batch, fan-in and fan-out from SIZES, either dtype, with or without ReLU.
LAYERS = dict(
    n=st.sampled_from(SIZES),
    fan_in=st.sampled_from(SIZES),
    fan_out=st.sampled_from(SIZES),
    dtype=st.sampled_from([np.float32, np.float64]),
    activation=st.sampled_from([None, "relu"]),
)


def torch_layer(x, w, b, activation, grad_out):
    """Forward output and (grad_x, grad_w, grad_b) from torch autograd."""
    xt = torch.from_numpy(x.copy()).requires_grad_()
    wt = torch.from_numpy(w.copy()).requires_grad_()
    bt = None if b is None else torch.from_numpy(b.copy()).requires_grad_()
    y = F.linear(xt, wt, bt)
    if activation == "relu":
        y = torch.relu(y)
    y.backward(torch.from_numpy(grad_out))
    gb = None if bt is None else bt.grad.numpy()
    return y.detach().numpy(), (xt.grad.numpy(), wt.grad.numpy(), gb)


def check_layer(x, w, b, activation, g, numerics):
    """linear / linear_backward against the float64 reference of the same formulas and
    against torch, each entry within the product bound (numerics.product_bound) of its
    K-term sum: out = [x, 1] @ [w.T; b], grad_x = g' @ w, grad_w = g'.T @ x, grad_b =
    1 @ g', where g' is g masked by out > 0 for ReLU (relu only shrinks an error)."""
    dtype = x.dtype
    n = x.shape[0]
    want, (gx_t, gw_t, gb_t) = torch_layer(x, w, b, activation, g)
    ones = np.ones((n, 1), dtype)
    x1 = np.hstack([x, ones])
    w1 = np.vstack([w.T, (np.zeros(w.shape[0], dtype) if b is None else b)[None]])
    bound = numerics.product_bound(x1, w1)

    out = linear(x, w, b, activation)
    assert out.dtype == dtype and out.shape == (n, w.shape[0])
    ref = x1.astype(np.float64) @ w1.astype(np.float64)
    if activation == "relu":
        ref = np.maximum(ref, 0)
        assert (out >= 0).all()
    assert np.all(np.abs(out - ref) <= bound)
    assert np.all(np.abs(out.astype(np.float64) - want) <= 2 * bound)  # both within bound

    gx, gw, gb = linear_backward(x, w, g, activation, out)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    g_masked = g * (out > 0) if activation == "relu" else g
    numerics.assert_product_close(gx, g_masked, w)
    numerics.assert_product_close(gw, g_masked.T, x)
    numerics.assert_product_close(gb[None], ones.T, g_masked)
    # torch masks with its own output: the same mask wherever the sign of out is certain
    differs = (out > 0) != (want > 0)
    assert np.all(np.abs(ref[differs]) <= bound[differs])
    if differs.any():
        return  # (vanishingly rare) torch's gradients are those of another mask
    assert np.all(np.abs(gx - gx_t) <= 2 * numerics.product_bound(g_masked, w))
    assert np.all(np.abs(gw - gw_t) <= 2 * numerics.product_bound(g_masked.T, x))
    if b is not None:
        assert np.all(np.abs(gb - gb_t) <= 2 * numerics.product_bound(ones.T, g_masked)[0])


@settings(max_examples=50, deadline=None)
@given(
    **LAYERS,
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_forward_and_backward_match_torch(
    n, fan_in, fan_out, dtype, activation, bias, seed, numerics
):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, fan_in)).astype(dtype)
    w = rng.standard_normal((fan_out, fan_in)).astype(dtype)
    b = rng.standard_normal(fan_out).astype(dtype) if bias else None
    g = rng.standard_normal((n, fan_out)).astype(dtype)
    check_layer(x, w, b, activation, g, numerics)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, fan_in, fan_out", [(64, 784, 256), (256, 256, 10), (5, 3, 1000)])
def test_mnist_mlp_shapes_match_torch(dtype, n, fan_in, fan_out, numerics):
    rng = np.random.default_rng(n + fan_in)
    x = rng.standard_normal((n, fan_in)).astype(dtype)
    w = (rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(dtype)
    b = rng.standard_normal(fan_out).astype(dtype)
    g = rng.standard_normal((n, fan_out)).astype(dtype)
    check_layer(x, w, b, "relu", g, numerics)


def test_relu_mask_matches_torch_at_zero_and_nan():
    # out exactly 0 blocks the gradient; NaN lets it through (torch's threshold_backward)
    x = np.eye(4)
    w = np.eye(4)
    b = np.array([0.0, -1.0, np.nan, 2.0])
    g = np.ones((4, 4))
    want, (gx_t, gw_t, gb_t) = torch_layer(x, w, b, "relu", g)
    out = linear(x, w, b, "relu")
    np.testing.assert_array_equal(out, want)
    gx, gw, gb = linear_backward(x, w, g, "relu", out)
    np.testing.assert_array_equal(gx, gx_t)
    np.testing.assert_array_equal(gw, gw_t)
    np.testing.assert_array_equal(gb, gb_t)


def test_need_grad_x_false_skips_grad_x_only():
    rng = np.random.default_rng(3)
    x, w, g = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)), rng.standard_normal((5, 3))
    full = linear_backward(x, w, g)
    gx, gw, gb = linear_backward(x, w, g, need_grad_x=False)
    assert gx is None
    np.testing.assert_array_equal(gw, full[1])
    np.testing.assert_array_equal(gb, full[2])


def test_grad_out_is_not_modified_and_views_are_handled():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 9))[::2]  # non-contiguous rows
    w = rng.standard_normal((9, 5)).T  # (5, 9) as a transposed view
    g = rng.standard_normal((6, 5))
    g_copy = g.copy()
    out = linear(x, w, None, "relu")
    want, (gx_t, gw_t, _) = torch_layer(
        np.ascontiguousarray(x), np.ascontiguousarray(w), None, "relu", g
    )
    np.testing.assert_allclose(out, want, rtol=1e-12)
    gx, gw, _ = linear_backward(x, w, g, "relu", out)
    np.testing.assert_array_equal(g, g_copy)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, gw_t, rtol=1e-12, atol=1e-12)


X = np.zeros((4, 3), np.float32)
W = np.zeros((5, 3), np.float32)
B = np.zeros(5, np.float32)
G = np.zeros((4, 5), np.float32)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(w=np.zeros((5, 4), np.float32)), ValueError, "w"),
        (dict(w=W[0]), ValueError, "w"),
        (dict(x=X[0]), ValueError, "x"),
        (dict(x=X.astype(np.int32)), TypeError, "x"),
        (dict(x=X.tolist()), TypeError, "x"),
        (dict(b=np.zeros(4, np.float32)), ValueError, "b"),
        (dict(b=np.zeros((5, 1), np.float32)), ValueError, "b"),
        (dict(b=B.astype(np.float64)), TypeError, "b"),
        (dict(w=W.astype(np.float64)), TypeError, "w"),
        (dict(activation="gelu"), ValueError, "activation"),
        (dict(activation="ReLU"), ValueError, "activation"),
    ],
)
def test_linear_rejects_bad_inputs_naming_the_argument(kwargs, error, name):
    args = dict(x=X, w=W, b=B, activation=None) | kwargs
    with pytest.raises(error, match=name):
        linear(**args)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(grad_out=np.zeros((4, 4), np.float32)), ValueError, "grad_out"),
        (dict(grad_out=np.zeros((3, 5), np.float32)), ValueError, "grad_out"),
        (dict(grad_out=G[0]), ValueError, "grad_out"),
        (dict(grad_out=G.astype(np.float64)), TypeError, "grad_out"),
        (dict(w=np.zeros((5, 4), np.float32)), ValueError, "w"),
        (dict(activation="tanh"), ValueError, "activation"),
        (dict(activation="relu", out=None), ValueError, "out"),
        (dict(activation="relu", out=np.zeros((4, 4), np.float32)), ValueError, "out"),
        (dict(activation="relu", out=G.astype(np.float64)), TypeError, "out"),
        (dict(need_grad_x="yes"), TypeError, "need_grad_x"),
        (dict(need_grad_x=1), TypeError, "need_grad_x: expected a bool, got int"),
        (dict(need_grad_x=None), TypeError, "need_grad_x: expected a bool, got NoneType"),
    ],
)
def test_linear_backward_rejects_bad_inputs_naming_the_argument(kwargs, error, name):
    args = dict(x=X, w=W, grad_out=G, activation=None, out=None) | kwargs
    with pytest.raises(error, match=name):
        linear_backward(**args)


def test_backward_writes_grad_w_into_a_given_buffer():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    g = rng.standard_normal((5, 3))
    dest = np.empty_like(w)
    _, grad_w, _ = linear_backward(x, w, g, grad_w_out=dest)
    assert grad_w is dest
    np.testing.assert_allclose(dest, g.T @ x, rtol=1e-12)


def test_backward_grad_w_out_of_wrong_shape_names_it():
    x, w, g = np.ones((5, 4)), np.ones((3, 4)), np.ones((5, 3))
    with pytest.raises(ValueError, match="grad_w_out: expected shape"):
        linear_backward(x, w, g, grad_w_out=np.empty((4, 3)))


# ---------------------------------------------------------------- aliased grad_w_out


@settings(max_examples=60, deadline=None)
@given(
    **LAYERS,
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_grad_w_out_may_overlap_every_input(
    n, fan_in, fan_out, dtype, activation, seed, data, numerics
):
    """x, w, grad_out, out and grad_w_out are views into one buffer at arbitrary offsets
    (grad_w_out = w included): the gradients are those of the inputs before the call."""
    shapes = [(n, fan_in), (fan_out, fan_in), (n, fan_out), (n, fan_out), (fan_out, fan_in)]
    sizes = [a * b for a, b in shapes]
    rng = np.random.default_rng(seed)
    buf = rng.standard_normal(max(sizes) + min(sizes)).astype(dtype)
    offsets = data.draw(
        st.tuples(*(st.integers(0, buf.size - size) for size in sizes)), label="offsets"
    )
    if data.draw(st.booleans(), label="grad_w_out is w"):
        offsets = (*offsets[:4], offsets[1])
    views = zip(offsets, sizes, shapes, strict=True)
    x, w, g, out, dest = (buf[o : o + size].reshape(shape) for o, size, shape in views)
    x0, w0, g0, out0 = x.copy(), w.copy(), g.copy(), out.copy()
    gx, gw, gb = linear_backward(x, w, g, activation, out, grad_w_out=dest)
    assert gw is dest

    g_masked = g0 * (out0 > 0) if activation == "relu" else g0
    assert np.all(
        np.abs(gx - g_masked.astype(np.float64) @ w0) <= numerics.product_bound(g_masked, w0)
    )
    want_w = g_masked.T.astype(np.float64) @ x0
    assert np.all(np.abs(gw - want_w) <= numerics.product_bound(g_masked.T, x0))
    ones = np.ones((1, n), dtype)
    assert np.all(
        np.abs(gb - g_masked.sum(axis=0, dtype=np.float64))
        <= numerics.product_bound(ones, g_masked)
    )

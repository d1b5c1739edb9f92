"""Fully connected layer ``x @ w.T + b`` (torch Linear layout) with an optional fused ReLU,
and its backward pass.

The matrix products come from fastcore_cv.kernels.gemm; what this module adds is the
elementwise work around them, each done in ONE compiled pass: bias + ReLU over the output
(forward), and ReLU mask + bias gradient (column sums) over grad_out (backward).
"""

from __future__ import annotations

import numpy as np

from fastcore_cv.kernels import _checks
from fastcore_cv.kernels._jit import CONTRACT, kernel
from fastcore_cv.kernels.gemm import matmul

ACTIVATIONS = (None, "relu")


@kernel(fastmath=CONTRACT)
def _bias_relu(out, b, has_bias, relu):
    """out = relu(out + b) in place, row by row (a row is still in cache from the matmul).

    ReLU is ``0 if v < 0 else v`` so NaN stays NaN, as torch.relu keeps it.
    """
    n, m = out.shape
    zero = out.dtype.type(0.0)
    for i in range(n):
        if has_bias:
            for j in range(m):
                out[i, j] += b[j]
        if relu:
            for j in range(m):
                v = out[i, j]
                out[i, j] = zero if v < zero else v


@kernel(fastmath=CONTRACT)
def _relu_mask_colsum(g, out, relu, gm, gb):
    """gm = g where out > 0 else 0 (only when ``relu``; else gm is g itself), gb = gm.sum(0).

    Mask test is ``out <= 0 -> 0``, as torch's threshold_backward: exactly 0 blocks the
    gradient, NaN lets it through. Column sums accumulate in float64.
    """
    n, m = g.shape
    acc = np.zeros(m, np.float64)
    zero = g.dtype.type(0.0)
    for i in range(n):
        if relu:
            for j in range(m):
                v = zero if out[i, j] <= 0 else g[i, j]
                gm[i, j] = v
                acc[j] += v
        else:
            for j in range(m):
                acc[j] += g[i, j]
    for j in range(m):
        gb[j] = acc[j]


def _check_layer(x: object, w: object) -> tuple[np.ndarray, np.ndarray]:
    x = _checks.check_float_array(x, "x", ndim=2)
    w = _checks.check_float_array(w, "w", ndim=2)
    _checks.check_same_dtype(x=x, w=w)
    _checks.check_dim("w", 1, w.shape[1], x.shape[1], "in_features = x.shape[1]")
    return x, w


def linear(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    activation: str | None = None,
) -> np.ndarray:
    """``activation(x @ w.T + b)`` for x (N, in), w (out, in), b (out,) or None.

    ``activation`` is None or 'relu'; bias and ReLU are applied in one compiled pass over the
    product. Same values as ``torch.relu(torch.nn.functional.linear(x, w, b))``.
    """
    x, w = _check_layer(x, w)
    if b is not None:
        b = _checks.check_float_array(b, "b", ndim=1)
        _checks.check_same_dtype(x=x, b=b)
        _checks.check_dim("b", 0, b.shape[0], w.shape[0], "one bias per output, w.shape[0]")
    _checks.check_choice(activation, "activation", ACTIVATIONS)
    out = matmul(x, w, trans_b=True)
    relu = activation == "relu"
    if b is not None or relu:
        _bias_relu(out, np.empty(0, x.dtype) if b is None else b, b is not None, relu)
    return out


def linear_backward(
    x: np.ndarray,
    w: np.ndarray,
    grad_out: np.ndarray,
    activation: str | None = None,
    out: np.ndarray | None = None,
    need_grad_x: bool = True,
    *,
    grad_w_out: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``linear(x, w, b, activation)`` given d(loss)/d(output) ``grad_out`` (N, out).

    Returns ``(grad_x, grad_w, grad_b)``: g @ w, g.T @ x and g.sum(0), where g is grad_out
    masked by the ReLU when ``activation='relu'``; the mask comes from ``out`` (the forward
    output, or the pre-activation: both are > 0 at the same places), zero where out <= 0 as
    in torch. ``grad_x`` is None when ``need_grad_x`` is False (a first layer has no use for
    it: that skips one of the two matmuls). ``grad_b`` is returned even for a layer without
    bias; ignore it then. ``grad_w_out`` (shape of w) receives grad_w in place, e.g. the
    optimizer's flat gradient buffer: that saves copying a 784x256 gradient (30-37 us); it
    may overlap the inputs (even be ``w``): they are all read before it is written.
    """
    x, w = _check_layer(x, w)
    n, m = x.shape[0], w.shape[0]
    grad_out = _checks.check_float_array(grad_out, "grad_out", ndim=2)
    _checks.check_same_dtype(x=x, grad_out=grad_out)
    _checks.check_dim("grad_out", 0, grad_out.shape[0], n, "one row per row of x")
    _checks.check_dim("grad_out", 1, grad_out.shape[1], m, "out_features = w.shape[0]")
    _checks.check_choice(activation, "activation", ACTIVATIONS)
    need_grad_x = _checks.check_bool(need_grad_x, "need_grad_x")
    relu = activation == "relu"
    if relu:
        if out is None:
            raise ValueError("out: the forward output is needed for the relu mask, got None")
        out = _checks.check_float_array(out, "out", ndim=2)
        _checks.check_same_dtype(x=x, out=out)
        _checks.check_dim("out", 0, out.shape[0], n, "one row per row of x")
        _checks.check_dim("out", 1, out.shape[1], m, "out_features = w.shape[0]")
    grad_b = np.empty(m, dtype=x.dtype)
    g = np.empty_like(grad_out) if relu else grad_out
    _relu_mask_colsum(grad_out, out if relu else grad_out, relu, g, grad_b)
    if grad_w_out is not None:
        _checks.check_out(grad_w_out, "grad_w_out", w.shape, x.dtype)
    # grad_x first: grad_w_out may be w itself (or overlap x, w or grad_out), and w and g must
    # be read before it is written; matmul computes aside when its out overlaps g or x.
    grad_x = matmul(g, w) if need_grad_x else None
    grad_w = matmul(g, x, trans_a=True, out=grad_w_out)
    return grad_x, grad_w, grad_b

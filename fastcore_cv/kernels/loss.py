"""Softmax cross-entropy with its gradient in one pass per row; log-softmax, softmax, argmax.

Training needs the loss AND d(loss)/d(logits) = softmax - target distribution, so both come
out of one visit of each row (max, exp-and-sum, scale) instead of torch's four kernels
(log_softmax, nll, and their two backwards).

The exp inside is ``kernels/_fast_exp.py``'s, which LLVM vectorizes (Numba's scalar exp made
this kernel 0.5x torch at 1024 x 1000).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from fastcore_cv.kernels import _checks
from fastcore_cv.kernels._fast_exp import _exp_nonpos, _maxnum
from fastcore_cv.kernels._jit import REDUCE, kernel
from fastcore_cv.threads import get_num_threads

REDUCTIONS = ("mean", "sum", "none")

# Rows go parallel when n * (C + 64) reaches this: a row costs about as much as 64 more
# logits (35 ns at C = 10, 0.4 ns per logit at C = 1000), and entering a parallel region
# costs 1.1-1.6 us. Break-even measured with 2 threads (serial vs parallel): 128 x 10
# 5.1 vs 5.2 us, 64 x 100 5.7 vs 5.5 us, 8 x 1000 4.0 vs 3.9 us; 256 x 10 9.6 vs 8.5 us.
PARALLEL_MIN_WORK = 12000


# ---------------------------------------------------------------- row kernels

# LLVM vectorizes the row loops 16 lanes x 4 (float32), i.e. 64 logits per iteration, and
# runs the remainder one logit at a time: at C = 100 the 36 leftover logits took 60% of the
# row (133 ns vs 60 ns at C = 65).
W = 64
# The padded kernel works on blocks of rows: at most BLOCK_ROWS, and at most
# BLOCK_FLOATS / width so its two buffers stay in L1. Per row at 1024 rows, one thread:
# C = 300 took 149-151 ns with 2-4 rows per block and 163 ns with 16; C = 100 77 ns with
# 8-16 rows and 79 ns with 4 or 32.
BLOCK_ROWS = 16
BLOCK_FLOATS = 2048

# Rows are indexed as x[i, j], never as views x[i]: each view costs reference-count calls,
# which at C = 10 were most of the time per row. Scalars are widened with np.float64(v):
# Numba's float(v) keeps a float32 a float32 (it rounded the loss to float32 steps).


@kernel(fastmath=REDUCE)
def _row_max_expsum(x, e, i):
    """Return (max, sum exp(x[i] - max)) of row i, writing exp(x[i] - max) into e[i]."""
    c = x.shape[1]
    m = x[i, 0]
    for j in range(c):  # from 0, not 1: a trip count of c - 1 < 64 stays scalar at c = 64
        m = _maxnum(m, x[i, j])
    s = x.dtype.type(0.0)
    for j in range(c):
        v = _exp_nonpos(x[i, j] - m)
        e[i, j] = v
        s += v
    return m, s


@kernel(fastmath=REDUCE)
def _row_loss(m, log_s, x_t, sz, c, eps):
    """(1 - eps) * (-log p_t) + eps * mean_j(-log p_j), combined in float64 from the row max
    ``m``, log-sum-exp(x - m) ``log_s`` and ``sz`` = sum_j (x_j - m): -log p_j = log_s -
    (x_j - m). The callers accumulate the exp-sum and ``sz`` in x's dtype; only this
    combination (and the log) is float64.

    Summing the shifted logits keeps the smoothing term accurate for large logits: a float32
    sum of the raw x_j (1e4 in size) was off by 5e-5 where torch's was 1e-7 (its error grows
    with |x|, that of the shifted sum only with the loss). The eps term is skipped at eps = 0
    so a -inf logit cannot make 0 * inf = NaN."""
    loss = (m - x_t) + log_s
    if eps > 0.0:
        loss = (1.0 - eps) * loss + eps * (log_s - sz / c)
    return loss


@kernel(fastmath=REDUCE)
def _xent_direct(x, targets, grad, row_loss, eps, scale, i0, i1):
    """Rows i0..i1: row_loss[i] and grad[i] = scale * (softmax(x[i]) - q[i]), with q the
    label-smoothed target distribution (1 - eps) * onehot + eps / C."""
    c = x.shape[1]
    off = x.dtype.type(scale * eps / c)  # the eps / C part of q, scaled
    hit = x.dtype.type(scale * (1.0 - eps))  # the one-hot part of q, scaled
    for i in range(i0, i1):
        t = targets[i]
        m, s = _row_max_expsum(x, grad, i)
        sz = x.dtype.type(0.0)
        if eps > 0.0:
            for j in range(c):
                sz += x[i, j] - m
        log_s = math.log(np.float64(s))
        row_loss[i] = _row_loss(np.float64(m), log_s, np.float64(x[i, t]), np.float64(sz), c, eps)
        a = x.dtype.type(scale / np.float64(s))
        for j in range(c):
            grad[i, j] = grad[i, j] * a - off
        grad[i, t] -= hit


@kernel(fastmath=REDUCE)
def _xent_padded(x, targets, grad, row_loss, eps, scale, i0, i1, cp, rows):
    """Same results as _xent_direct, for rows whose length leaves a long remainder mod W.

    ``rows`` rows at a time are copied into a buffer padded with -inf (exp gives 0) to
    width ``cp``, a multiple of W, so no logit takes the one-at-a-time path; each pass
    (max, exp-sum, scale) runs over the whole block so the rows' reduction latencies overlap.
    float32 at C = 100: 76 ns per row instead of 127 ns.
    """
    c = x.shape[1]
    off = x.dtype.type(scale * eps / c)
    hit = x.dtype.type(scale * (1.0 - eps))
    buf = np.empty((rows, cp), x.dtype)
    ebuf = np.empty((rows, cp), x.dtype)
    ms = np.empty(rows, x.dtype)
    ss = np.empty(rows, x.dtype)
    for b in range(rows):
        for j in range(c, cp):
            buf[b, j] = -np.inf
    for r0 in range(i0, i1, rows):
        nb = min(rows, i1 - r0)
        for b in range(nb):
            for j in range(c):
                buf[b, j] = x[r0 + b, j]
        for b in range(nb):
            m = buf[b, 0]
            for j in range(cp):
                m = _maxnum(m, buf[b, j])
            ms[b] = m
        for b in range(nb):
            m = ms[b]
            s = x.dtype.type(0.0)
            for j in range(cp):
                v = _exp_nonpos(buf[b, j] - m)
                ebuf[b, j] = v
                s += v
            ss[b] = s
        for b in range(nb):
            i = r0 + b
            t = targets[i]
            m = ms[b]
            sz = x.dtype.type(0.0)
            if eps > 0.0:
                for j in range(cp):
                    sz += buf[b, j] - m if j < c else x.dtype.type(0.0)
            log_s = math.log(np.float64(ss[b]))
            row_loss[i] = _row_loss(
                np.float64(m), log_s, np.float64(x[i, t]), np.float64(sz), c, eps
            )
            a = x.dtype.type(scale / np.float64(ss[b]))
            for j in range(c):
                grad[i, j] = ebuf[b, j] * a - off
            grad[i, t] -= hit


@kernel
def _xent_block(x, targets, grad, row_loss, eps, scale, i0, i1, cp):
    if cp > 0:
        rows = max(1, min(BLOCK_ROWS, BLOCK_FLOATS // cp))
        _xent_padded(x, targets, grad, row_loss, eps, scale, i0, i1, cp, rows)
    else:
        _xent_direct(x, targets, grad, row_loss, eps, scale, i0, i1)


@kernel
def _sum(v):
    """Plain serial sum: inside a parallel kernel ``v.sum()`` would open a second parallel
    region (another 1-2 us)."""
    s = 0.0
    for k in range(v.shape[0]):
        s += v[k]
    return s


@kernel
def _xent_serial(x, targets, grad, row_loss, eps, scale, nb, cp):
    """Fill row_loss and grad; return the sum of row_loss."""
    _xent_block(x, targets, grad, row_loss, eps, scale, 0, x.shape[0], cp)
    return _sum(row_loss)


@kernel(parallel=True)
def _xent_parallel(x, targets, grad, row_loss, eps, scale, nb, cp):
    """_xent_serial with the rows split into ``nb`` blocks, one per thread."""
    n = x.shape[0]
    for b in prange(nb):
        _xent_block(x, targets, grad, row_loss, eps, scale, b * n // nb, (b + 1) * n // nb, cp)
    return _sum(row_loss)


@kernel(fastmath=REDUCE)
def _softmax_rows(x, out, log, i0, i1):
    c = x.shape[1]
    for i in range(i0, i1):
        m, s = _row_max_expsum(x, out, i)
        if log:
            # (x - max) - log(s), not x - (max + log(s)): at |x| ~ 1e4 a float32 sum
            # max + log(s) would already be rounded to 1e-3
            logs = x.dtype.type(math.log(np.float64(s)))
            for j in range(c):
                out[i, j] = (x[i, j] - m) - logs
        else:
            inv = x.dtype.type(1.0 / np.float64(s))
            for j in range(c):
                out[i, j] = out[i, j] * inv


@kernel
def _softmax_serial(x, out, log, nb):
    _softmax_rows(x, out, log, 0, x.shape[0])


@kernel(parallel=True)
def _softmax_parallel(x, out, log, nb):
    n = x.shape[0]
    for b in prange(nb):
        _softmax_rows(x, out, log, b * n // nb, (b + 1) * n // nb)


@kernel
def _argmax_rows(x, out):
    """First index of the row maximum; the first NaN wins (np.argmax semantics)."""
    for i in range(x.shape[0]):
        best = x[i, 0]
        k = 0
        if best == best:
            for j in range(1, x.shape[1]):
                v = x[i, j]
                if v > best:
                    best = v
                    k = j
                elif v != v:
                    k = j
                    break
        out[i] = k


# ---------------------------------------------------------------- public API


def _blocks(x: np.ndarray) -> int:
    """Row blocks to run in parallel (one per thread), or 1 for the serial kernel."""
    n, c = x.shape
    if n * (c + 64) < PARALLEL_MIN_WORK:
        return 1
    # the thread policy's count: numba.get_num_threads() costs 0.7 us per call
    return min(n, get_num_threads())


def _padded_width(x: np.ndarray) -> int:
    """Width for _xent_padded, or 0 to use _xent_direct.

    Padding pays when the remainder mod W is long and the row not too long: float32, ns per
    row, direct vs padded: C = 33 64 vs 48, 100 131 vs 77, 300 221 vs 150, 700 363 vs 304;
    but C = 16 41 vs 46, 129 (remainder 1) 87 vs 114, 1000 423 vs 420, 2000 698 vs 942.
    float64 was slower padded at every C tried (its vector step is 32, not 64).
    """
    c = x.shape[1]
    if x.dtype != np.float32 or c < 24 or c > 768 or c % W < 16:
        return 0
    return (c + W - 1) // W * W


def softmax_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[np.floating | np.ndarray, np.ndarray]:
    """Cross-entropy of softmax(logits) against class indices, and its gradient w.r.t. logits.

    Same values as ``torch.nn.functional.cross_entropy(logits, targets, reduction=...,
    label_smoothing=eps)``: per row, loss = (1 - eps) * (-log p_t) + eps * mean_j(-log p_j).

    Returns ``(loss, grad_logits)``. ``loss`` is a scalar of the logits' dtype for 'mean' and
    'sum', a vector (N,) for 'none'. ``grad_logits`` (N, C) is the gradient of the reduced
    loss ('mean' divides by N). For 'none' it is the gradient of the per-row losses summed,
    i.e. what torch gives for ``loss_none.backward(torch.ones(N))``; scale rows yourself for
    other weights. A row holding NaN or +inf, or only -inf, gives NaN (as torch does); a -inf
    logit elsewhere gets probability 0.
    """
    logits = _checks.check_float_array(logits, "logits", ndim=2)
    n, c = logits.shape
    targets = _checks.check_targets(targets, "targets", n, c)
    _checks.check_choice(reduction, "reduction", REDUCTIONS)
    eps = _checks.check_number(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    scale = 1.0 / n if reduction == "mean" else 1.0
    grad = np.empty_like(logits)
    row_loss = np.empty(n, dtype=np.float64)  # float64: the mean over rows is summed exactly
    nb = _blocks(logits)
    run = _xent_parallel if nb > 1 else _xent_serial
    total = run(logits, targets, grad, row_loss, eps, scale, nb, _padded_width(logits))
    if reduction == "none":
        return row_loss.astype(logits.dtype), grad
    return logits.dtype.type(total * scale), grad


def _rows_view(x: np.ndarray, axis: int) -> tuple[np.ndarray, bool]:
    """Return x as (rows, classes) with ``axis`` last, and whether it was transposed."""
    _checks.check_choice(axis, "axis", tuple(range(-x.ndim, x.ndim)))
    axis %= x.ndim
    if x.ndim == 1:
        return x.reshape(1, -1), False
    if axis == 0:
        return np.ascontiguousarray(x.T), True
    return x, False


def _softmax(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    x = _checks.check_float_array(x, "x", ndim=(1, 2))
    rows, transposed = _rows_view(x, axis)
    out = np.empty_like(rows)
    nb = _blocks(rows)
    run = _softmax_parallel if nb > 1 else _softmax_serial
    run(rows, out, log, nb)
    if transposed:
        return np.ascontiguousarray(out.T)
    return out.reshape(x.shape)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(x)) along ``axis`` of a 1-D or 2-D array, computed as x - max - log-sum-exp
    so large logits (1e4) neither overflow nor lose precision."""
    return _softmax(x, axis, log=True)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(x) along ``axis`` of a 1-D or 2-D array (max subtracted first, for stability)."""
    return _softmax(x, axis, log=False)


def argmax(x: np.ndarray, axis: int = -1) -> np.ndarray | np.int64:
    """Index of the maximum along ``axis`` (int64), like ``np.argmax``: ties go to the first
    index and the first NaN wins. A 1-D input gives a scalar."""
    x = _checks.check_float_array(x, "x", ndim=(1, 2))
    rows, _ = _rows_view(x, axis)
    out = np.empty(rows.shape[0], dtype=np.int64)
    _argmax_rows(rows, out)
    return out[0] if x.ndim == 1 else out

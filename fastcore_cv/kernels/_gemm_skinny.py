"""The skinny paths of ``gemm.matmul``: shapes where packing B costs more than it saves (a few
rows: matrix-vector; few outputs or the torch Linear layout ``x @ w.T``: dot products of
contiguous rows). Measurements: bench/RESULTS.md ("matmul") and the comments below."""

from __future__ import annotations

from numba import prange

from fastcore_cv.kernels._jit import CONTRACT, REDUCE, kernel


@kernel(fastmath=set(CONTRACT))
def _ikj_cols(a, b, c, j0, j1):
    """C[:, j0:j1] = A @ B[:, j0:j1] row by row (i-k-j): the inner loop is a vector axpy.

    For a few rows this streams B once, which is all a matrix-vector product can do. Four
    rows of B per pass over the C row quarter the loads and stores of C (one row at a time
    was store-bound: 87 vs 64 us for OpenBLAS at 1x1280 @ 1280x1000).
    """
    m, k_total = a.shape
    w = j1 - j0
    for i in range(m):
        crow = c[i, j0:j1]
        arow = a[i]
        s0 = arow[0]
        b0 = b[0, j0:j1]
        for j in range(w):
            crow[j] = s0 * b0[j]
        k = 1
        while k + 4 <= k_total:
            s0, s1, s2, s3 = arow[k], arow[k + 1], arow[k + 2], arow[k + 3]
            b0, b1, b2, b3 = b[k, j0:j1], b[k + 1, j0:j1], b[k + 2, j0:j1], b[k + 3, j0:j1]
            for j in range(w):
                crow[j] += s0 * b0[j] + s1 * b1[j] + s2 * b2[j] + s3 * b3[j]
            k += 4
        for kk in range(k, k_total):
            s0 = arow[kk]
            b0 = b[kk, j0:j1]
            for j in range(w):
                crow[j] += s0 * b0[j]


@kernel(fastmath=set(CONTRACT), parallel=True)
def _ikj_parallel(a, b, c, chunks):
    """``_ikj_cols`` over ``chunks`` column ranges in parallel; each streams its part of B."""
    n = c.shape[1]
    step = (n + chunks - 1) // chunks
    step = (step + 15) // 16 * 16  # whole vectors per thread
    for t in prange(chunks):
        j0 = min(n, t * step)
        _ikj_cols(a, b, c, j0, min(n, j0 + step))


@kernel(fastmath=set(REDUCE))
def _dot_rows(a, bt, c, i0, i1):
    """C[i0:i1] = A[i0:i1] @ Bt.T as dot products of contiguous rows ("dot form").

    For x @ w.T with few outputs (a Linear layer's head) both operands are read along rows.
    A 4 x 5 block of dot products shares each loaded vector of A and Bt (64x512 @ (10x512)^T:
    one dot at a time 22 us, 4x4 10.9 us, 4x5 9.0 us); reassociation lets the 20 sums
    vectorize and keeps NaN/inf semantics. Ragged edges repeat the last real row or column,
    whose extra results are discarded.
    """
    k_total = a.shape[1]
    n = bt.shape[0]
    zero = a.dtype.type(0)  # a real 0, not 0 * x: that would turn an inf into NaN
    for i in range(i0, i1, 4):
        x0, x1 = a[i], a[min(i + 1, i1 - 1)]
        x2, x3 = a[min(i + 2, i1 - 1)], a[min(i + 3, i1 - 1)]
        for j in range(0, n, 5):
            w0, w1, w2 = bt[j], bt[min(j + 1, n - 1)], bt[min(j + 2, n - 1)]
            w3, w4 = bt[min(j + 3, n - 1)], bt[min(j + 4, n - 1)]
            s00 = s01 = s02 = s03 = s04 = s10 = s11 = s12 = s13 = s14 = zero
            s20 = s21 = s22 = s23 = s24 = s30 = s31 = s32 = s33 = s34 = zero
            for k in range(k_total):
                u0, u1, u2, u3, u4 = w0[k], w1[k], w2[k], w3[k], w4[k]
                v = x0[k]
                s00 += v * u0
                s01 += v * u1
                s02 += v * u2
                s03 += v * u3
                s04 += v * u4
                v = x1[k]
                s10 += v * u0
                s11 += v * u1
                s12 += v * u2
                s13 += v * u3
                s14 += v * u4
                v = x2[k]
                s20 += v * u0
                s21 += v * u1
                s22 += v * u2
                s23 += v * u3
                s24 += v * u4
                v = x3[k]
                s30 += v * u0
                s31 += v * u1
                s32 += v * u2
                s33 += v * u3
                s34 += v * u4
            block = (
                (s00, s01, s02, s03, s04),
                (s10, s11, s12, s13, s14),
                (s20, s21, s22, s23, s24),
                (s30, s31, s32, s33, s34),
            )
            for ii in range(min(4, i1 - i)):
                row = block[ii]
                crow = c[i + ii]
                for jj in range(min(5, n - j)):
                    crow[j + jj] = row[jj]


@kernel(fastmath=set(REDUCE), parallel=True)
def _dot_parallel(a, bt, c, chunks):
    """``_dot_rows`` over ``chunks`` row ranges in parallel."""
    m = a.shape[0]
    step = (m + chunks - 1) // chunks
    for t in prange(chunks):
        _dot_rows(a, bt, c, min(m, t * step), min(m, (t + 1) * step))

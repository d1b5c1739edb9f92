"""Matrix multiply ``op(a) @ op(b)`` for float32/float64: a register-tiled GEMM plus skinny paths.

This module checks the arguments and picks a path: the large-matrix path follows BLIS
(``_gemm_tiled``: packed panels of B, an MR x NR register tile of C); skinny shapes (a single
row, the torch Linear layout ``x @ w.T``) lose to the packing overhead and get their own
loops (``_gemm_skinny``); an op(a) with many exact zeros (a ReLU-masked gradient, ``g.T @ x``)
goes to the zero-skipping kernel of ``_gemm_sparse``. The measurements behind
the choices are in bench/RESULTS.md ("matmul", "train step") and the comments below.
"""

from __future__ import annotations

import numba
import numpy as np

from fastcore_cv.kernels import _checks
from fastcore_cv.kernels import _gemm_sparse as _sparse
from fastcore_cv.kernels._gemm_skinny import _dot_parallel, _dot_rows, _ikj_cols, _ikj_parallel
from fastcore_cv.kernels._gemm_tiled import _gemm_tiled
from fastcore_cv.kernels._jit import slp_vectorizer
from fastcore_cv.threads import get_num_threads

# Dispatch thresholds (bench/RESULTS.md, "matmul"): below PARALLEL_WORK multiply-adds a
# parallel region's 1-2 us entry cost outweighs a second thread; B up to PACK_BYTES is read
# in place (64x784 @ 784x128: 127 us in place vs 138 us packed); at most DOT_COLS outputs
# use the dot form; at most IKJ_ROWS rows use the row-by-row loop.
PARALLEL_WORK = 1 << 18
PACK_BYTES = 1 << 20
DOT_COLS = 16
IKJ_ROWS = 4
# x @ w.T (trans_b) uses the dot form, which reads both operands along rows, when w fits in
# L2 (DOT_B_BYTES) or a is short (DOT_ROWS): packing w^T (a transposing copy) cost more
# than it saved. One thread, GFLOP/s dot vs packed: 64x784x256 99.5 vs 76, 256x784x256
# 98.8 vs 98.9, 512^3 91 vs 87, 64x3072x512 96 vs 31; 1024^3 (4 MB w) 82 vs 92.
DOT_B_BYTES = 2 << 20
DOT_ROWS = 128
# The zero-skipping path (_gemm_sparse) is tried for at least SPARSE_WORK multiply-adds
# and taken when at most SPARSE_DENSITY of op(a) is non-zero and b is finite. Measured at
# 256x64 @ 64x784 (one thread): 118/167/222/283 us at 30/50/70/100% non-zeros, dense 265 us.
# A ~512-element sample of a decides first whether counting its zeros exactly is worth it
# (the exact count cost 2-30 us, the sample 1 us).
SPARSE_WORK = 1 << 20
SPARSE_DENSITY = 0.75
SPARSE_SAMPLE = 512
SPARSE_SAMPLE_DENSITY = 0.85

_ready: set[np.dtype] = set()


def _signatures(dtype: np.dtype) -> dict:
    """The one signature each kernel is compiled for: inputs read-only (writable arrays
    convert to it, so one compiled version serves both), outputs writable."""
    t = numba.from_dtype(dtype)
    ro = numba.types.Array(t, 2, "C", readonly=True)
    rw = numba.types.Array(t, 2, "C")
    i, flag = numba.types.int64, numba.types.boolean
    masks = numba.types.Array(numba.types.uint64, 2, "C")
    return {
        _gemm_tiled: (ro, ro, flag, flag, rw, i),
        _ikj_cols: (ro, ro, rw, i, i),
        _ikj_parallel: (ro, ro, rw, i),
        _dot_rows: (ro, ro, rw, i, i),
        _dot_parallel: (ro, ro, rw, i),
        _sparse.masks_of: (ro, flag),
        _sparse.all_finite: (ro,),
        _sparse.gemm_sparse: (ro, flag, ro, masks, rw, i),
    }


def _ensure_compiled(dtype: np.dtype) -> None:
    """Compile (or load from the on-disk cache) every kernel for ``dtype``, SLP vectorizer on.

    The vectorizer switch is read at compile time and the cache key ignores it, so kernels
    are only ever compiled here, explicitly; afterwards compiling is disabled so no call
    can slip in a slow, unvectorized specialization.
    """
    if dtype in _ready:
        return
    with slp_vectorizer():
        for fn, sig in _signatures(dtype).items():
            fn.disable_compile(False)
            fn.compile(sig)
            fn.disable_compile(True)
    _ready.add(dtype)


def warmup(dtypes: tuple = _checks.FLOAT_DTYPES) -> None:
    """Compile every matmul path for ``dtypes`` now (cold: ~15 s per dtype; cached: <1 s)."""
    for dtype in dtypes:
        _ensure_compiled(np.dtype(dtype))


def _operand(x: object, name: str, trans: bool) -> tuple[np.ndarray, bool]:
    """Validate one operand; a transposed (F-ordered) view is used as its C-ordered base
    with the flag flipped instead of being copied."""
    if isinstance(x, np.ndarray):
        flags = x.flags
        if flags.c_contiguous and flags.aligned and x.dtype in _checks.FLOAT_DTYPES:
            if x.ndim == 2:  # the common case, checked without copies or extra calls
                return x, trans
        elif flags.f_contiguous and x.ndim == 2:
            x, trans = x.T, not trans
    x = _checks.check_float_array(x, name, ndim=2, allow_empty=True)
    if not x.flags.aligned:  # compiled code is specialised for aligned arrays
        x = x.copy()
    return x, trans


def _mostly_zero(a: np.ndarray) -> bool:
    """Whether a strided sample of ``a`` holds few enough non-zeros for the sparse path."""
    flat = a.reshape(-1)
    sample = flat[:: flat.shape[0] // SPARSE_SAMPLE + 1]
    return np.count_nonzero(sample) <= SPARSE_SAMPLE_DENSITY * sample.shape[0]


def matmul(
    a: np.ndarray,
    b: np.ndarray,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Return ``op(a) @ op(b)`` where ``op(x)`` is ``x.T`` when ``trans_x``; 2-D float32/64.

    ``a`` and ``b`` must share a dtype; ``out`` (optional, C-contiguous, right shape and
    dtype) receives the result, even when it is ``a`` or ``b`` or overlaps them (as NumPy,
    the product is then computed aside and copied in). Like NumPy, an empty inner
    dimension gives zeros.
    """
    trans_a = _checks.check_bool(trans_a, "trans_a")
    trans_b = _checks.check_bool(trans_b, "trans_b")
    a, trans_a = _operand(a, "a", trans_a)
    b, trans_b = _operand(b, "b", trans_b)
    dtype = a.dtype
    if b.dtype != dtype:
        _checks.check_same_dtype(a=a, b=b)
    m, k = a.shape[::-1] if trans_a else a.shape
    kb, n = b.shape[::-1] if trans_b else b.shape
    if kb != k:
        raise ValueError(
            f"b: inner dimensions differ: op(a) is {m}x{k} but op(b) is {kb}x{n} "
            f"(trans_a={trans_a}, trans_b={trans_b})"
        )
    if out is None:
        return _product(a, b, trans_a, trans_b, np.empty((m, n), dtype=dtype))
    _checks.check_out(out, "out", (m, n), dtype)
    if _checks.overlaps(out, a, b):
        # The kernels write C while still reading A and B (matmul(x, x, out=x) gave NaN).
        out[...] = _product(a, b, trans_a, trans_b, np.empty((m, n), dtype=dtype))
        return out
    return _product(a, b, trans_a, trans_b, out)


def _product(
    a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool, out: np.ndarray
) -> np.ndarray:
    """Write op(a) @ op(b) into ``out`` (checked, not overlapping a or b) by the fastest path."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    dtype = a.dtype
    _ensure_compiled(dtype)
    # The policy's cached count: numba.get_num_threads() costs 0.7 us, 10% of a small call.
    threads = get_num_threads() if m * n * k >= PARALLEL_WORK else 1
    parallel = threads > 1
    if not trans_b and m * n * k >= SPARSE_WORK and n > DOT_COLS and _mostly_zero(a):
        masks, nnz = _sparse.masks_of(a, trans_a)
        if nnz <= SPARSE_DENSITY * m * k and _sparse.all_finite(b):
            _sparse.gemm_sparse(a, trans_a, b, masks, out, threads)
            return out
    if trans_a:  # the kernels read A by rows; one transposing copy (M*K, small next to 2MNK)
        a = np.ascontiguousarray(a.T)
    if trans_b and (n <= DOT_COLS or m <= DOT_ROWS or n * k * b.itemsize <= DOT_B_BYTES):
        if parallel:  # dot form: both operands read along rows
            _dot_parallel(a, b, out, min(threads, (m + 3) // 4))
        else:
            _dot_rows(a, b, out, 0, m)
        return out
    if n <= DOT_COLS:
        bt = b if trans_b else np.ascontiguousarray(b.T)
        if parallel:
            _dot_parallel(a, bt, out, min(threads, (m + 3) // 4))
        else:
            _dot_rows(a, bt, out, 0, m)
    elif m <= IKJ_ROWS and not trans_b:
        if parallel:
            _ikj_parallel(a, b, out, threads)
        else:
            _ikj_cols(a, b, out, 0, n)
    else:
        pack = trans_b or k * n * a.itemsize > PACK_BYTES
        _gemm_tiled(a, b, trans_b, pack, out, threads)
    return out

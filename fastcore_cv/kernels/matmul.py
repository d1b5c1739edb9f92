"""Matrix multiply ``op(a) @ op(b)`` for float32/float64: a register-tiled GEMM plus skinny paths.

The large-matrix path follows BLIS: B is packed into KC x NR panels, and a micro-kernel keeps
an MR x NR tile of C in registers while it streams a row of B and MR scalars of A per step.
Skinny shapes (a single row, the torch Linear layout ``x @ w.T``) lose to the packing
overhead and get their own loops. An op(a) with many exact zeros (a ReLU-masked gradient,
``g.T @ x``) goes to the zero-skipping kernel of ``_matmul_sparse``. Measurements behind
every choice are in bench/RESULTS.md ("matmul", "train step") and
/work/shared/notes/kernel-performance.md.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from numba.extending import overload

from fastcore_cv.kernels import _checks
from fastcore_cv.kernels import _matmul_sparse as _sparse
from fastcore_cv.kernels._jit import CONTRACT, REDUCE, kernel, slp_vectorizer
from fastcore_cv.threads import get_num_threads

# Micro-tile: MR rows x (256 bytes of columns) = 6 x 64 float32 or 6 x 32 float64, i.e. 24 of
# AVX-512's 32 vector registers hold C, 4 hold the row of B, 1 the broadcast of A. Measured
# in a first prototype (512^2/1024^2, one thread, vs OpenBLAS): 4x48 0.76-0.80x, 8x32
# 0.71-0.81x, 8x48 0.84-0.87x, 6x64 0.88-0.94x; this module's version reaches ~1.0-1.1x.
# A is not packed: its MR rows are read in place (each a contiguous run of KC values).
MR = 6
TILE_BYTES = 256
# K block: a KC x NR panel of B (64 KB) and MR rows of A stay in L1/L2 while C stays in
# registers; larger KC means fewer passes over C.
KC = 256


def _micro_source(mr: int, nr: int) -> str:
    """Python source of the MR x NR micro-kernel, written out in scalars.

    C lives in mr*nr scalar locals (a NumPy tile would live in memory, not registers), and
    LLVM's SLP vectorizer packs them into vector registers; fully unrolled code is the only
    shape of it that Numba compiles to a register tile, hence the generator.
    """
    args = ", ".join([f"a{i}" for i in range(mr)] + [f"c{i}" for i in range(mr)])
    lines = [f"def micro(kc, {args}, b, boff, ldb, first, zero):"]
    lines.append("    if first:")
    for i in range(mr):
        lines.append("        " + "; ".join(f"t{i}_{j} = zero" for j in range(nr)))
    lines.append("    else:")
    for i in range(mr):
        lines.append("        " + "; ".join(f"t{i}_{j} = c{i}[{j}]" for j in range(nr)))
    lines.append("    for k in range(kc):")
    # A row view per k: indexes from 0 with constants, so no negative-index wraparound code
    # stops the vectorizer (a runtime offset there compiled to gathers).
    lines.append(f"        o = boff + k * ldb; bk = b[o:o + {nr}]")
    lines.append("        " + "; ".join(f"s{i} = a{i}[k]" for i in range(mr)))
    for j in range(nr):
        lines.append(
            f"        x = bk[{j}]; " + "; ".join(f"t{i}_{j} += s{i} * x" for i in range(mr))
        )
    for i in range(mr):
        lines.append("    " + "; ".join(f"c{i}[{j}] = t{i}_{j}" for j in range(nr)))
    return "\n".join(lines)


def _make_micro(nr: int):
    namespace: dict = {}
    exec(compile(_micro_source(MR, nr), f"<matmul micro-kernel {MR}x{nr}>", "exec"), namespace)
    return namespace["micro"]


_MICRO_F32 = _make_micro(TILE_BYTES // 4)
_MICRO_F64 = _make_micro(TILE_BYTES // 8)


def _micro(kc, a0, a1, a2, a3, a4, a5, c0, c1, c2, c3, c4, c5, b, boff, ldb, first, zero):
    """C[0:MR, 0:NR] (+)= A[0:MR, 0:kc] @ B[0:kc, 0:NR]; compiled per dtype via the overload."""
    raise NotImplementedError("compiled code only")


@overload(_micro, jit_options={"fastmath": set(CONTRACT), "error_model": "numpy"})
def _micro_overload(kc, a0, a1, a2, a3, a4, a5, c0, c1, c2, c3, c4, c5, b, boff, ldb, first, zero):
    return _MICRO_F32 if b.dtype == numba.types.float32 else _MICRO_F64


@kernel(fastmath=set(CONTRACT))
def _pack_panel(b, trans_b, pc, kc, j0, nr, dst):
    """Copy B[pc:pc+kc, j0:j0+nr] into dst as kc rows of NR, zero-padding columns nr..NR.

    The padding only ever meets padded output columns, which are never written back, so a
    real inf in A cannot turn into NaN in a real output cell.
    """
    width = dst.shape[0] // kc
    for k in range(kc):
        row = dst[k * width : (k + 1) * width]
        if trans_b:
            for j in range(nr):
                row[j] = b[j0 + j, pc + k]
        else:
            src = b[pc + k, j0 : j0 + nr]
            for j in range(nr):
                row[j] = src[j]
        for j in range(nr, width):
            row[j] = 0


@kernel(fastmath=set(CONTRACT))
def _pack_range(b, trans_b, pack, pc, kc, n, packed, p0, p1):
    """Pack panels p0..p1 of B's K block [pc, pc + kc) (all, or only a ragged last one)."""
    nr = TILE_BYTES // b.itemsize
    for p in range(p0, p1):
        j0 = p * nr
        w = min(nr, n - j0)
        if pack or w < nr:
            _pack_panel(b, trans_b, pc, kc, j0, w, packed[p, : kc * nr])


@kernel(fastmath=set(CONTRACT))
def _tile_range(a, b, pack, c, packed, pc, kc, qb, pg, ncg, t0, t1):
    """Tasks t0..t1 of one K block: task = QB micro-rows x PG panels of C."""
    m = a.shape[0]
    n = c.shape[1]
    nr = TILE_BYTES // a.itemsize
    npan = (n + nr - 1) // nr
    nq = (m + MR - 1) // MR
    first = pc == 0
    zero = a.dtype.type(0)
    zero_row = np.zeros(kc, dtype=a.dtype)
    tile = np.empty((MR, nr), dtype=a.dtype)
    for task in range(t0, t1):
        rb = task // ncg
        cg = task - rb * ncg
        for p in range(cg * pg, min(npan, (cg + 1) * pg)):
            j0 = p * nr
            w = min(nr, n - j0)
            if pack or w < nr:
                bsrc = packed[p]
                boff = 0
                ldb = nr
            else:
                bsrc = b.ravel()
                boff = pc * n + j0
                ldb = n
            for q in range(rb * qb, min(nq, (rb + 1) * qb)):
                i0 = q * MR
                h = min(MR, m - i0)
                a0 = a[i0, pc : pc + kc]
                a1 = a[i0 + 1, pc : pc + kc] if h > 1 else zero_row
                a2 = a[i0 + 2, pc : pc + kc] if h > 2 else zero_row
                a3 = a[i0 + 3, pc : pc + kc] if h > 3 else zero_row
                a4 = a[i0 + 4, pc : pc + kc] if h > 4 else zero_row
                a5 = a[i0 + 5, pc : pc + kc] if h > 5 else zero_row
                if h == MR and w == nr:
                    _micro(
                        kc, a0, a1, a2, a3, a4, a5,
                        c[i0, j0 : j0 + nr], c[i0 + 1, j0 : j0 + nr],
                        c[i0 + 2, j0 : j0 + nr], c[i0 + 3, j0 : j0 + nr],
                        c[i0 + 4, j0 : j0 + nr], c[i0 + 5, j0 : j0 + nr],
                        bsrc, boff, ldb, first, zero,
                    )  # fmt: skip
                else:
                    _micro(
                        kc, a0, a1, a2, a3, a4, a5,
                        tile[0], tile[1], tile[2], tile[3], tile[4], tile[5],
                        bsrc, boff, ldb, True, zero,
                    )  # fmt: skip
                    for i in range(h):
                        crow = c[i0 + i, j0 : j0 + w]
                        trow = tile[i]
                        if first:
                            for j in range(w):
                                crow[j] = trow[j]
                        else:
                            for j in range(w):
                                crow[j] += trow[j]


@kernel(fastmath=set(CONTRACT), parallel=True)
def _gemm_tiled(a, b, trans_b, pack, c, threads):
    """C = A @ op(B) with the register-tiled micro-kernel; ``prange`` over (rows, panels) tasks.

    ``a`` is M x K row-major; ``b`` is K x N (or N x K when ``trans_b``). With ``pack`` every
    KC x NR panel of B is copied contiguous first (needed when B is big or transposed: its
    rows then sit pages apart); otherwise B is read in place and only the ragged last
    panel is packed. One thread runs the same loops without entering parallel regions
    (two per K block, 1-2 us each: 64x10 @ 10x256 took 8.1 us with them).
    """
    m, k_total = a.shape
    n = c.shape[1]
    pack = pack or trans_b
    nr = TILE_BYTES // a.itemsize
    npan = (n + nr - 1) // nr
    nq = (m + MR - 1) // MR
    # Task = QB micro-rows x PG panels: the A rows (QB*MR x KC) stay in L2 while each B
    # panel streams past them.
    nrb = (nq + 7) // 8
    qb = (nq + nrb - 1) // nrb  # at most 8, spread evenly over the row blocks
    pg = npan
    while nrb * ((npan + pg - 1) // pg) < 4 * threads and pg > 1:
        pg = (pg + 1) // 2
    ncg = (npan + pg - 1) // pg
    # 64-byte aligned panels (each KC * NR elements, a multiple of 64 bytes): Numba's
    # np.empty only guarantees 32, and a vector load across two cache lines costs double.
    packed = _sparse.aligned_empty(npan * KC * nr, a).reshape((npan, KC * nr))
    nkb = (k_total + KC - 1) // KC
    kcb = (k_total + nkb - 1) // nkb  # equal K blocks: no thin last block re-reading C
    for pc in range(0, k_total, kcb):
        kc = min(kcb, k_total - pc)
        if threads == 1:
            _pack_range(b, trans_b, pack, pc, kc, n, packed, 0, npan)
            _tile_range(a, b, pack, c, packed, pc, kc, qb, pg, ncg, 0, nrb * ncg)
        else:
            for p in prange(npan):
                _pack_range(b, trans_b, pack, pc, kc, n, packed, p, p + 1)
            for task in prange(nrb * ncg):
                _tile_range(a, b, pack, c, packed, pc, kc, qb, pg, ncg, task, task + 1)


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
# The zero-skipping path (_matmul_sparse) is tried for at least SPARSE_WORK multiply-adds
# and taken when at most SPARSE_DENSITY of op(a) is non-zero and b is finite. Measured at
# 256x64 @ 64x784 (one thread): 118/167/222/283 us at 30/50/70/100% non-zeros, dense 265 us.
# A ~512-element sample of a decides first whether counting its zeros exactly is worth it
# (the exact count cost 2-30 us, the sample 1 us).
SPARSE_WORK = 1 << 20
SPARSE_DENSITY = 0.75
SPARSE_SAMPLE = 512
SPARSE_SAMPLE_DENSITY = 0.85

_KERNELS = (_gemm_tiled, _ikj_cols, _ikj_parallel, _dot_rows, _dot_parallel)
_SPARSE_KERNELS = (_sparse.masks_of, _sparse.all_finite, _sparse.gemm_sparse)
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


def warmup(dtypes: tuple = (np.float32, np.float64)) -> None:
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
    dtype) receives the result. Like NumPy, an empty inner dimension gives zeros.
    """
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
        out = np.empty((m, n), dtype=dtype)
    else:
        _checks.check_out(out, "out", (m, n), dtype)
    if m == 0 or n == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
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

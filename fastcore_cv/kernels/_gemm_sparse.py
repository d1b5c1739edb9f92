"""Zero-skipping ``op(a) @ b`` for an ``a`` with many exact zeros (matmul's sparse path).

A ReLU layer's weight gradient is ``g.T @ x`` where ``g`` is the output gradient masked by the
ReLU: about half of it is exactly 0 (fastai lesson 2's MLP: 50% at init). A dense GEMM
multiplies those zeros anyway; this path skips them. Per 64-long stretch of K, every row of
op(a) gets a bit mask of its non-zeros; the kernel walks the set bits (count-trailing-zeros)
and adds ``a[i, k] * b[k, block]`` into a register block of C row ``i``: one row of C at a
time, so a skipped k is skipped exactly, with no other row forcing it back in.

Measured, 256 x 64 @ 64 x 768 float32 at 50% zeros, one thread (bench/RESULTS.md "matmul"):
dense register-tiled path 250-265 us, this path 153-158 us (82% of the FMA peak on the
non-zeros; one vector load per FMA is the limit). Without zeros it is slower (~320 us), hence
the density threshold in gemm.py. Tried and dropped: two rows sharing the union of their
masks (at 50% zeros 75% of the k's survive: 193 us), two set bits per loop turn (156 us),
compacting index lists instead of bit masks (15 us to build vs 2 us). Skipping
``0 * b[k, j]`` is only exact when ``b`` is finite (0 * inf is NaN), so matmul checks that
first.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from fastcore_cv.kernels._buffers import aligned_empty
from fastcore_cv.kernels._jit import CONTRACT, REDUCE, kernel

# Register block: 8 AVX-512 vectors of C (128 float32 / 64 float64 columns); the packed
# 64 x 128 float32 block of b is then 32 KB, L1-sized. 96 and 128 columns ran alike
# (159 vs 158 us), 64 columns 172 us (loop overhead per k), 192 columns spilled L1 (168+).
WIDE_BYTES = 512
# Tail columns go 16 float32 (one vector) at a time instead of padding a whole wide block
# (N = 784 = 6 x 128 + 16 would otherwise compute 896 columns).
NARROW_BYTES = 64
# K stretch per bit mask (one uint64).
KB = 64
# The packed block of b is 64-byte aligned (_buffers.aligned_empty): 158 us, not 232.


def _block_source(nb: int) -> str:
    """Source of the 1 x nb block kernel: C[i, 0:nb] (+)= sum over set bits k of the mask
    of a[aoff + k * sk] * xp[k, 0:nb], with C in nb scalar locals (vectorized by SLP)."""
    lines = ["def block(mask, a, aoff, sk, xp, crow, first, zero):"]
    lines.append("    if first:")
    lines.append("        " + "; ".join(f"t{j} = zero" for j in range(nb)))
    lines.append("    else:")
    lines.append("        " + "; ".join(f"t{j} = crow[{j}]" for j in range(nb)))
    lines.append("    m = mask")
    lines.append("    while m != 0:")
    lines.append("        k = trailing_zeros(m)")
    lines.append("        m &= m - numba.uint64(1)")
    lines.append("        s = a[aoff + k * sk]")
    lines.append("        xr = xp[k]")  # unsigned k: no negative-index wraparound code
    for j in range(nb):
        lines.append(f"        t{j} += s * xr[{j}]")
    lines.append("    " + "; ".join(f"crow[{j}] = t{j}" for j in range(nb)))
    return "\n".join(lines)


def _make_block(nb: int):
    namespace = {"trailing_zeros": trailing_zeros, "numba": numba}
    exec(compile(_block_source(nb), f"<sparse block 1x{nb}>", "exec"), namespace)
    return namespace["block"]


_BLOCKS = {
    (kind, width): _make_block(width_bytes // itemsize)
    for kind, width_bytes in (("wide", WIDE_BYTES), ("narrow", NARROW_BYTES))
    for itemsize, width in ((4, width_bytes // 4), (8, width_bytes // 8))
}


def _wide(mask, a, aoff, sk, xp, crow, first, zero):
    raise NotImplementedError("compiled code only")


def _narrow(mask, a, aoff, sk, xp, crow, first, zero):
    raise NotImplementedError("compiled code only")


@overload(_wide, jit_options={"fastmath": set(CONTRACT), "error_model": "numpy"})
def _wide_overload(mask, a, aoff, sk, xp, crow, first, zero):
    return _BLOCKS["wide", WIDE_BYTES // a.dtype.bitwidth * 8]


@overload(_narrow, jit_options={"fastmath": set(CONTRACT), "error_model": "numpy"})
def _narrow_overload(mask, a, aoff, sk, xp, crow, first, zero):
    return _BLOCKS["narrow", NARROW_BYTES // a.dtype.bitwidth * 8]


@kernel(fastmath=set(CONTRACT))
def masks_of(a, trans_a):
    """Bit masks of op(a)'s non-zeros: bit k % KB of ``masks[k // KB, i]`` is set when
    op(a)[i, k] != 0 (NaN counts as non-zero). Returns (masks, number of non-zeros)."""
    if trans_a:
        k_total, m = a.shape
    else:
        m, k_total = a.shape
    masks = np.zeros(((k_total + KB - 1) // KB, m), dtype=np.uint64)
    nnz = 0
    if trans_a:  # rows of a are columns of op(a): vectorizes over i
        for k in range(k_total):
            row = a[k]
            mrow = masks[k // KB]
            shift = numba.uint64(k % KB)
            for i in range(m):
                nz = row[i] != 0
                mrow[i] |= numba.uint64(nz) << shift
                nnz += nz
    else:  # one uint64 per 64-long stretch of a row: an OR-reduction that vectorizes
        for i in range(m):
            row = a[i]
            for kb in range(masks.shape[0]):
                stretch = row[kb * KB : min(k_total, (kb + 1) * KB)]
                bits = numba.uint64(0)
                for t in range(stretch.shape[0]):
                    nz = stretch[t] != 0
                    bits |= numba.uint64(nz) << numba.uint64(t)
                    nnz += nz
                masks[kb, i] = bits
    return masks, nnz


@kernel(fastmath=set(REDUCE))
def all_finite(b):
    """True when ``b`` has no inf/NaN (x * 0 is NaN exactly for those; summed vectorized)."""
    s = b.dtype.type(0)
    zero = b.dtype.type(0)
    flat = b.ravel()
    for j in range(flat.shape[0]):
        s += flat[j] * zero
    return s == 0


@kernel(fastmath=set(CONTRACT))
def _tasks(a, trans_a, b, masks, c, nrc, t0, t1):
    """Tasks t0..t1 of gemm_sparse: task = row chunk (of ``nrc``) x column block."""
    m, n = c.shape
    k_total = b.shape[0]
    wide = WIDE_BYTES // a.itemsize
    narrow = NARROW_BYTES // a.itemsize
    nfull = n // wide
    rstep = (m + nrc - 1) // nrc
    nkb = (k_total + KB - 1) // KB
    af = a.ravel()
    zero = a.dtype.type(0)
    # op(a)[i, k] = af[i * si + k * sk]
    si, sk = (1, m) if trans_a else (k_total, 1)
    nblk = nfull + (n - nfull * wide + narrow - 1) // narrow
    for task in range(t0, t1):
        rc = task // nblk
        jb = task - rc * nblk
        if jb < nfull:
            j0, width = jb * wide, wide
        else:
            j0, width = nfull * wide + (jb - nfull) * narrow, narrow
        w = min(width, n - j0)
        buf = aligned_empty(KB * width, c)
        tmp = np.empty(width, dtype=c.dtype)
        for kb in range(nkb):
            k0 = kb * KB
            kc = min(KB, k_total - k0)
            xp = buf[: kc * width].reshape((kc, width))
            for r in range(kc):
                src = b[k0 + r, j0 : j0 + w]
                dst = xp[r]
                for j in range(w):
                    dst[j] = src[j]
                for j in range(w, width):
                    dst[j] = 0  # padded columns meet finite values only; never written back
            first = kb == 0
            mrow = masks[kb]
            for i in range(rc * rstep, min(m, (rc + 1) * rstep)):
                aoff = i * si + k0 * sk
                if width == wide:
                    _wide(mrow[i], af, aoff, sk, xp, c[i, j0 : j0 + wide], first, zero)
                elif w == narrow:
                    _narrow(mrow[i], af, aoff, sk, xp, c[i, j0 : j0 + narrow], first, zero)
                else:
                    _narrow(mrow[i], af, aoff, sk, xp, tmp, True, zero)
                    crow = c[i, j0 : j0 + w]
                    for j in range(w):
                        crow[j] = tmp[j] if first else crow[j] + tmp[j]


@kernel(fastmath=set(CONTRACT), parallel=True)
def gemm_sparse(a, trans_a, b, masks, c, threads):
    """C = op(a) @ b skipping op(a)'s zeros (``masks`` from ``masks_of``).

    Tasks are (row chunk, column block) pairs, row chunk major so that prange's even split
    gives each thread whole rows of blocks (the narrow tail block is cheap); each packs its
    K x width block of b into an aligned buffer per K stretch and runs every row of its
    chunk over it. One thread runs them without entering a parallel region (1-2 us).
    """
    m, n = c.shape
    wide = WIDE_BYTES // a.itemsize
    narrow = NARROW_BYTES // a.itemsize
    nfull = n // wide
    nblk = nfull + (n - nfull * wide + narrow - 1) // narrow
    # Row chunks only when there are too few column blocks to keep every thread busy.
    nrc = threads if nblk < 4 * threads else 1
    if threads == 1:
        _tasks(a, trans_a, b, masks, c, 1, 0, nblk)
        return
    for task in prange(nblk * nrc):
        _tasks(a, trans_a, b, masks, c, nrc, task, task + 1)

"""The large-matrix path of ``gemm.matmul``, as BLIS does it: B packed into KC x NR panels, and a
micro-kernel that keeps an MR x NR tile of C in registers while it streams a row of B and MR
scalars of A per step. Measurements: bench/RESULTS.md ("matmul") and the comments below."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from numba.extending import overload

from fastcore_cv.kernels._buffers import aligned_empty
from fastcore_cv.kernels._jit import CONTRACT, kernel

# Micro-tile: MR rows x (256 bytes of columns) = 6 x 64 float32 or 6 x 32 float64, i.e. 24 of
# AVX-512's 32 vector registers hold C, 4 hold the row of B, 1 the broadcast of A. Measured
# in a first prototype (512^2/1024^2, one thread, vs OpenBLAS): 4x48 0.76-0.80x, 8x32
# 0.71-0.81x, 8x48 0.84-0.87x, 6x64 0.88-0.94x; this module's version reaches ~1.0-1.1x.
# A is not packed: its MR rows are read in place (each a contiguous run of KC values).
# MR is the height the micro-kernel is written for, not a setting: _micro's arguments and
# _tile_range's rows a0..a5 are spelled out for six rows, so another height means rewriting
# both. The tile's width (TILE_BYTES) is free: the micro-kernel source is generated for it.
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
    exec(compile(_micro_source(MR, nr), f"<gemm micro-kernel {MR}x{nr}>", "exec"), namespace)
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
    packed = aligned_empty(npan * KC * nr, a).reshape((npan, KC * nr))
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

"""Aligned scratch buffers for the GEMM kernels (``_gemm_sparse`` and ``_gemm_tiled`` pack
blocks of their operands into them)."""

from __future__ import annotations

import numpy as np

from fastcore_cv.kernels._jit import kernel

# A packed block must be 64-byte aligned: at a 16-byte offset every vector load straddles
# two cache lines (gemm_sparse: 158 -> 232 us). Numba's np.empty only guarantees 32 bytes.
ALIGN = 64


@kernel
def aligned_empty(n, like):
    """A 1-D array of ``n`` elements of ``like``'s dtype whose data is ALIGN-byte aligned."""
    pad = ALIGN // like.itemsize
    raw = np.empty(n + pad, dtype=like.dtype)
    off = (-raw.ctypes.data) % ALIGN // like.itemsize
    return raw[off : off + n]

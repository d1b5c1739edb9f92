"""How kernels are compiled: one decorator, the cache, and the SLP-vectorizer switch.

``cache=True`` writes compiled code next to the source, or, when the package folder is
read-only, to Numba's per-user cache (~/.cache/numba...); set FASTCORE_CV_CACHE_DIR (or
NUMBA_CACHE_DIR) to choose another place. Compiled code is tied to this CPU model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba

# fastmath subsets: full fastmath folds isnan() to False and lets reductions reorder
# freely; 'contract' (FMA) keeps NaN/inf semantics; reassoc is only for plain reductions.
# (Plain sets: Numba accepts a bool, dict or set, not a frozenset. Never mutate them.)
CONTRACT = {"contract"}
REDUCE = {"contract", "reassoc"}


def kernel(*args, **kwargs):
    """``numba.njit`` with the library's defaults: cached, GIL released, no Python objects."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    kwargs.setdefault("error_model", "numpy")
    return numba.njit(*args, **kwargs)


@contextlib.contextmanager
def slp_vectorizer() -> Iterator[None]:
    """Compile inside this block with LLVM's SLP vectorizer on (off by default in Numba).

    The register-tiled GEMM micro-kernel only vectorizes with it. It is process-global and
    read at compile time, so it is switched on only around our own compilation.
    """
    old = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = True
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = old

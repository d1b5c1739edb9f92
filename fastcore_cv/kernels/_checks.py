"""The one argument checker every public kernel calls before entering compiled code.

Compiled code trusts its inputs (a wrong shape there reads out of bounds), so every check
lives here, in Python, and every error names the argument it is about.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The scalar checks are shared with the rest of the package (fastcore_cv.checks); the
# kernels reach them as _checks.check_number / _checks.check_choice / _checks.check_bool.
from fastcore_cv.checks import check_bool, check_choice, check_number  # noqa: F401

# The dtypes every kernel is compiled for, written once.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# np.shares_memory's budget for a strided pair; past it the pair counts as overlapping.
SHARES_MEMORY_WORK = 10_000


def check_float_array(
    x: object,
    name: str,
    *,
    ndim: int | Sequence[int],
    allow_empty: bool = False,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 array of the given rank, or raise.

    Non-contiguous views are copied (never computed on wrongly); other dtypes, ranks and
    non-arrays raise TypeError/ValueError naming ``name``.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name}: expected a rank-{want} array, got rank {x.ndim} {x.shape}")
    if x.size == 0 and not allow_empty:
        raise ValueError(f"{name}: empty array {x.shape}; nothing to compute")
    return np.ascontiguousarray(x)


def check_same_dtype(**arrays: np.ndarray | None) -> np.dtype:
    """Raise TypeError unless all given arrays share one dtype; return it."""
    given = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {v.dtype for v in given.values()}
    if len(dtypes) > 1:
        listed = ", ".join(f"{k}={v.dtype}" for k, v in given.items())
        raise TypeError(f"dtype mismatch: {listed}; cast them to one dtype first")
    return next(iter(dtypes))


def check_dim(name: str, axis: int, got: int, want: int, what: str) -> None:
    """Raise ValueError when ``name``'s ``axis`` has length ``got`` instead of ``want``."""
    if got != want:
        raise ValueError(f"{name}: axis {axis} has length {got}, expected {want} ({what})")


def check_out(out: object, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Validate a caller-provided output buffer: exact shape and dtype, C-contiguous, writable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (results are written in place)")
    if not out.flags.writeable:
        raise ValueError(f"{name}: array is read-only")
    return out


def check_targets(targets: object, name: str, n: int, num_classes: int) -> np.ndarray:
    """Return class-index targets as a contiguous int64 vector of length ``n`` in range."""
    if not isinstance(targets, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(targets).__name__}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {targets.dtype}")
    if targets.ndim != 1:
        raise ValueError(f"{name}: expected a rank-1 array, got rank {targets.ndim}")
    check_dim(name, 0, targets.shape[0], n, "one target per row of logits")
    given = targets
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    # One unsigned comparison finds negatives and too-large indices alike (a negative int64
    # viewed as uint64 is huge): ~1 us at n=1024 where min() + max() took 3.5 us. A uint64
    # >= 2**63 wraps negative in int64 and is caught too; the message quotes the value given.
    if n and (targets.view(np.uint64) >= num_classes).any():
        bad = given[(given < 0) | (given >= num_classes)][0]
        raise ValueError(f"{name}: class index {bad} out of range [0, {num_classes})")
    return targets


def check_offsets(offsets: object, name: str, total: int) -> np.ndarray:
    """Return segment offsets as contiguous int64: 1-D, from 0 to ``total``, non-decreasing.

    Offsets o_0..o_k split a flat buffer of ``total`` elements into k (possibly empty)
    segments [o_i, o_{i+1}); compiled code indexes with them, so every bound is checked.
    """
    if not isinstance(offsets, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(offsets).__name__}")
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer offsets, got dtype {offsets.dtype}")
    if offsets.ndim != 1 or offsets.shape[0] < 2:
        raise ValueError(f"{name}: expected a rank-1 array of >= 2 offsets, got {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != total:
        raise ValueError(
            f"{name}: must start at 0 and end at {total}, got {offsets[0]} .. {offsets[-1]}"
        )
    if np.any(offsets[1:] < offsets[:-1]):
        raise ValueError(f"{name}: offsets must be non-decreasing")
    return np.ascontiguousarray(offsets, dtype=np.int64)


def check_bool_vector(x: object, name: str, length: int) -> np.ndarray:
    """Return ``x`` as a contiguous bool vector of ``length`` (a bool fills all entries)."""
    if isinstance(x, (bool, np.bool_)):
        return np.full(length, bool(x))
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a bool or numpy.ndarray, got {type(x).__name__}")
    if x.dtype != np.bool_:
        raise TypeError(f"{name}: expected dtype bool, got {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a rank-1 array, got rank {x.ndim}")
    check_dim(name, 0, x.shape[0], length, "one flag per segment")
    return np.ascontiguousarray(x)


def overlaps(x: np.ndarray, *others: np.ndarray) -> bool:
    """Whether ``x`` shares any byte of memory with any of ``others``.

    np.may_share_memory compares the two byte ranges (start address, extent) in C: exact for
    dense (C- or F-contiguous) arrays, whoever owns the memory (``.numpy()`` views of torch
    tensors too), at ~0.3 us a pair. Reading the addresses in Python costs more
    (``__array_interface__`` ~1.5 us, ``ctypes.data`` ~1.1 us). A strided pair whose ranges
    meet gets np.shares_memory's exact test; one too hard for it (over SHARES_MEMORY_WORK)
    counts as overlapping.
    """
    for y in others:
        if not np.may_share_memory(x, y):
            continue
        if _dense(x) and _dense(y):
            return True
        try:
            if np.shares_memory(x, y, max_work=SHARES_MEMORY_WORK):
                return True
        except np.exceptions.TooHardError:
            return True
    return False


def _dense(a: np.ndarray) -> bool:
    return a.flags.c_contiguous or a.flags.f_contiguous


def check_no_overlap(name: str, written: np.ndarray, **others: np.ndarray | None) -> None:
    """Raise ValueError when ``written`` (an array a kernel writes in place) shares memory
    with any of ``others``: there is no right answer when two outputs are one buffer."""
    for other_name, other in others.items():
        if other is not None and overlaps(written, other):
            raise ValueError(f"{name}: shares memory with {other_name}; pass separate arrays")

"""Shared numerics for the kernel tests: the error bound of a product, derived from the
dtype's epsilon and the operands' magnitudes (never a fixed rtol/atol)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def product_bound(a: np.ndarray, b: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """Per-entry error bound of a @ b computed in ``dtype`` (default a's): (K + 1) eps
    |a| @ |b|, the classic bound for a K-term sum of products in any order plus the final
    rounding, and the smallest normal for underflow."""
    dtype = np.dtype(dtype or a.dtype)
    a64, b64 = np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))
    return (a.shape[1] + 1) * np.finfo(dtype).eps * (a64 @ b64) + np.finfo(dtype).tiny


def assert_product_close(
    got: np.ndarray, a: np.ndarray, b: np.ndarray, dtype: np.dtype | None = None
) -> None:
    """``got`` equals the float64 a @ b within ``product_bound`` in every entry."""
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = product_bound(a, b, dtype or got.dtype)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= tol), f"max err {err.max()}, max tol {tol.max()}"


@pytest.fixture(scope="session")
def numerics() -> SimpleNamespace:
    """The helpers above, for tests (``from conftest import`` is ambiguous when several
    test folders have a conftest.py)."""
    return SimpleNamespace(product_bound=product_bound, assert_product_close=assert_product_close)

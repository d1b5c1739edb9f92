"""matmul: op(a) @ op(b) against a float64 NumPy reference, on every dispatch path.

Tolerance: each entry may be off by K * eps * (|op(a)| @ |op(b)|) (the classic bound for a
K-term sum of products in any order), plus eps for the final rounding to the output dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcore_cv
import fastcore_cv.kernels
from fastcore_cv.kernels import gemm as mm
from fastcore_cv.kernels.gemm import matmul

DTYPES = (np.float32, np.float64)
# 1, primes, non-multiples of the 6 x NR tile and of KC = 256, and sizes either side of
# the skinny-path thresholds (IKJ_ROWS = 4 rows, DOT_COLS = 16 columns).
SIZES = [1, 2, 3, 4, 5, 7, 13, 16, 17, 31, 47, 64, 65, 97, 130]
K_SIZES = [1, 2, 7, 31, 64, 97, 255, 256, 257, 300, 521]


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    mm.warmup()  # compile (or load) every path once for the whole module


def _operands(rng, m, k, n, trans_a, trans_b, dtype):
    """Random op(a) (m x k) and op(b) (k x n), stored transposed when the flag says so."""
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    stored_a = np.ascontiguousarray(a.T) if trans_a else a
    stored_b = np.ascontiguousarray(b.T) if trans_b else b
    return a, b, stored_a, stored_b


@settings(max_examples=60, deadline=None)
@given(
    m=st.sampled_from(SIZES),
    k=st.sampled_from(K_SIZES),
    n=st.sampled_from(SIZES),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_float64_reference(m, k, n, trans_a, trans_b, dtype, seed, numerics):
    a, b, sa, sb = _operands(np.random.default_rng(seed), m, k, n, trans_a, trans_b, dtype)
    got = matmul(sa, sb, trans_a=trans_a, trans_b=trans_b)
    assert got.dtype == dtype
    numerics.assert_product_close(got, a, b)


# One case per dispatch path at sizes big enough to go parallel or pack B, at 1 and 2 threads.
PATH_CASES = [
    (64, 512, 10, False, True),  # dot form (torch Linear layout), parallel
    (64, 512, 10, False, False),  # dot form after transposing b
    (1, 1280, 1000, False, False),  # row-by-row (ikj), parallel over columns
    (3, 700, 333, False, False),
    (2, 600, 300, False, True),  # few rows with b transposed: dot form
    (64, 784, 128, False, False),  # tiled, b read in place
    (64, 784, 128, True, False),  # tiled with a transposed (copied to rows)
    (100, 600, 500, False, False),  # tiled, b packed (k*n*4 > 1 MB)
    (131, 517, 263, False, True),  # dot form (w fits in L2), ragged edges
    (64, 784, 256, False, True),  # dot form: the MNIST MLP's first layer, x @ w.T
    (130, 1100, 500, False, True),  # tiled, b packed from its transpose (w > DOT_B_BYTES)
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PATH_CASES, ids=str)
def test_dispatch_paths(case, dtype, threads, numerics):
    m, k, n, trans_a, trans_b = case
    before = fastcore_cv.get_num_threads()
    fastcore_cv.set_num_threads(threads)
    try:
        a, b, sa, sb = _operands(np.random.default_rng(m + k + n), m, k, n, trans_a, trans_b, dtype)
        numerics.assert_product_close(matmul(sa, sb, trans_a=trans_a, trans_b=trans_b), a, b)
    finally:
        fastcore_cv.set_num_threads(before)


def _relu_like(rng, m, k, density, dtype):
    """A matrix with about ``density`` non-zeros, like a ReLU-masked gradient."""
    a = rng.standard_normal((m, k)).astype(dtype)
    a[rng.random((m, k)) >= density] = 0
    return a


class _Spy:
    """Counts calls of the zero-skipping kernel while forwarding them."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


# Around the sparse kernel's column blocks (128/64 wide, 16/8 narrow for float32/64) and its
# 64-long K stretches.
SPARSE_N = [17, 31, 64, 65, 127, 128, 129, 143, 200, 300]
SPARSE_K = [1, 7, 63, 64, 65, 130, 257]


@settings(max_examples=50, deadline=None)
@given(
    m=st.sampled_from(SIZES),
    k=st.sampled_from(SPARSE_K),
    n=st.sampled_from(SPARSE_N),
    density=st.sampled_from([0.0, 0.1, 0.5, 0.75]),
    trans_a=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_zero_skipping_path_matches_reference(
    m, k, n, density, trans_a, dtype, threads, seed, numerics
):
    """A mostly-zero op(a) (a ReLU-masked gradient) goes through the zero-skipping kernel."""
    rng = np.random.default_rng(seed)
    a = _relu_like(rng, m, k, density, dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    before = fastcore_cv.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(mm._sparse.gemm_sparse)
        mp.setattr(mm._sparse, "gemm_sparse", spy)
        mp.setattr(mm, "SPARSE_WORK", 0)  # every size, not only >= 1M multiply-adds
        fastcore_cv.set_num_threads(threads)
        try:
            got = matmul(np.ascontiguousarray(a.T) if trans_a else a, b, trans_a=trans_a)
        finally:
            fastcore_cv.set_num_threads(before)
    # Small random matrices can land above the density threshold: then the dense path runs.
    assert spy.calls == int(np.count_nonzero(a) <= mm.SPARSE_DENSITY * m * k)
    numerics.assert_product_close(got, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_shaped_product_skips_zeros_at_default_thresholds(dtype, numerics):
    """g.T @ x for the MLP's first layer (batch 64, 256 units, 784 inputs), half zeros."""
    rng = np.random.default_rng(3)
    g = _relu_like(rng, 64, 256, 0.5, dtype)
    x = rng.standard_normal((64, 784)).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(mm._sparse.gemm_sparse)
        mp.setattr(mm._sparse, "gemm_sparse", spy)
        got = matmul(g, x, trans_a=True)
        dense = matmul(rng.standard_normal((64, 256)).astype(dtype), x, trans_a=True)
    assert spy.calls == 1  # the dense second product took the tiled path
    assert dense.shape == (256, 784)
    numerics.assert_product_close(got, g.T, x)


def test_dense_operands_skip_the_zero_count(numerics):
    """A sample of a dense a rules the sparse path out before its zeros are counted."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((64, 784)).astype(np.float32)
    b = rng.standard_normal((784, 128)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(mm._sparse.masks_of)
        mp.setattr(mm._sparse, "masks_of", spy)
        numerics.assert_product_close(matmul(a, b), a, b)
        a[:, ::4] = 0  # 62.5% non-zeros: the sample says count them (then: sparse path)
        a[::2, 1::4] = 0
        numerics.assert_product_close(matmul(a, b), a, b)
    assert spy.calls == 1


def test_zero_skipping_keeps_nan_and_inf_like_numpy():
    """NaN/inf in a are not zeros (kept); inf/NaN in b turn 0 * b into NaN, so a b that is
    not finite sends the product to the dense path, where NumPy's NaNs appear."""
    rng = np.random.default_rng(4)
    a = _relu_like(rng, 40, 70, 0.3, np.float32)
    b = rng.standard_normal((70, 150)).astype(np.float32)
    a[3, 5], a[7, 9] = np.nan, -np.inf
    b_bad = b.copy()
    b_bad[2, 10] = np.inf  # a[:, 2] has zeros: those rows get NaN in column 10
    b_bad[11, 20] = np.nan
    for bb in (b, b_bad):
        with np.errstate(invalid="ignore"), pytest.MonkeyPatch.context() as mp:
            mp.setattr(mm, "SPARSE_WORK", 0)
            got = matmul(a, bb)
            ref = a.astype(np.float64) @ bb.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
        finite = np.isfinite(ref)
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)
    assert np.isnan(matmul(np.zeros((2, 70), np.float32), b_bad)).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_receives_result(dtype, numerics):
    a, b, _, _ = _operands(np.random.default_rng(0), 37, 300, 70, False, False, dtype)
    out = np.full((37, 70), np.nan, dtype=dtype)
    got = matmul(a, b, out=out)
    assert got is out
    numerics.assert_product_close(out, a, b)


def test_views_are_handled(numerics):
    """Strided, Fortran-ordered, transposed and read-only inputs give the same result."""
    rng = np.random.default_rng(1)
    big = rng.standard_normal((90, 400)).astype(np.float32)
    a = big[::2, ::3]  # 45 x 134, strided: copied
    b = np.asfortranarray(rng.standard_normal((134, 70)).astype(np.float32))  # via trans flag
    numerics.assert_product_close(matmul(a, b), a, b)
    numerics.assert_product_close(matmul(a, b.T, trans_b=True), a, b)
    numerics.assert_product_close(matmul(a.T.copy().T, b), a, b)
    b.flags.writeable = False
    numerics.assert_product_close(matmul(a, b), a, b)


@pytest.mark.parametrize(
    "m,k,n,trans_b",
    [(64, 512, 10, True), (1, 300, 200, False), (13, 300, 130, False), (20, 300, 70, True)],
)
def test_nan_and_inf_propagate_like_numpy(m, k, n, trans_b):
    """inf/NaN land where NumPy puts them; zero padding of ragged tiles never adds NaN."""
    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 1.5, (m, k)).astype(np.float32)
    b = rng.uniform(0.5, 1.5, (k, n)).astype(np.float32)
    a[m - 1, 0] = np.inf  # last (ragged) row: padded rows/columns meet it
    a[0, k - 1] = -np.inf
    b[k // 2, n - 1] = np.nan  # last (ragged) column
    b[0, 0] = 0.0  # 0 * inf = NaN in a real cell, as NumPy gives
    with np.errstate(invalid="ignore"):
        ref = a.astype(np.float64) @ b.astype(np.float64)
    got = matmul(a, np.ascontiguousarray(b.T) if trans_b else b, trans_b=trans_b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_dimensions_follow_numpy(dtype):
    z = matmul(np.ones((3, 0), dtype), np.ones((0, 4), dtype))
    np.testing.assert_array_equal(z, np.zeros((3, 4), dtype))
    out = np.full((3, 4), 7.0, dtype)
    assert matmul(np.ones((0, 3), dtype), np.ones((0, 4), dtype), trans_a=True, out=out) is out
    np.testing.assert_array_equal(out, 0)
    assert matmul(np.ones((0, 5), dtype), np.ones((5, 4), dtype)).shape == (0, 4)
    assert matmul(np.ones((3, 5), dtype), np.ones((5, 0), dtype)).shape == (3, 0)


F32 = np.ones((3, 4), np.float32)
G32 = np.ones((4, 5), np.float32)


@pytest.mark.parametrize(
    "a,b,kwargs,exc,match",
    [
        (np.ones((3, 4), np.int64), G32, {}, TypeError, "a"),
        (F32, np.ones((4, 5), np.int32), {}, TypeError, "b"),
        (np.ones((3, 4), np.float16), G32, {}, TypeError, "a: expected dtype"),
        (F32, np.ones((4, 5), object), {}, TypeError, "b: expected dtype"),
        ([[1.0, 2.0]], G32, {}, TypeError, "a: expected a numpy.ndarray"),
        (np.ones(4, np.float32), G32, {}, ValueError, "a: expected a rank-2"),
        (F32, np.ones((4, 5, 1), np.float32), {}, ValueError, "b: expected a rank-2"),
        (F32, np.ones((5, 6), np.float32), {}, ValueError, "b: inner dimensions differ.*3x4.*5x6"),
        (F32, G32, {"trans_a": True}, ValueError, "inner dimensions differ.*4x3.*4x5"),
        (F32, np.ones((4, 5), np.float64), {}, TypeError, "a=float32, b=float64"),
        (F32, G32, {"out": np.empty((3, 4), np.float32)}, ValueError, "out: expected shape"),
        (F32, G32, {"out": np.empty((3, 5), np.float64)}, TypeError, "out: expected dtype"),
        (F32, G32, {"out": np.empty((5, 3), np.float32).T}, ValueError, "out: must be C-cont"),
        (F32, G32, {"out": [[0.0] * 5] * 3}, TypeError, "out: expected a numpy.ndarray"),
    ],
)
def test_bad_input_raises_naming_the_argument(a, b, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        matmul(a, b, **kwargs)


def test_module_and_function_names_do_not_collide():
    """``kernels.matmul`` is the function wherever it is imported from; the module is gemm."""
    assert fastcore_cv.kernels.matmul is matmul is mm.matmul
    assert callable(fastcore_cv.kernels.matmul) and mm.__name__ == "fastcore_cv.kernels.gemm"


@pytest.mark.parametrize("flag", ["trans_a", "trans_b"])
@pytest.mark.parametrize("value", ["yes", "", 1, 0, None, 1.0])
def test_transpose_flags_must_be_bools(flag, value):
    """A truthy string or number is refused, not read as True (or False)."""
    with pytest.raises(TypeError, match=f"{flag}: expected a bool"):
        matmul(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32), **{flag: value})


def test_numpy_bools_are_accepted_as_flags(numerics):
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    numerics.assert_product_close(matmul(a, a, trans_a=np.True_, trans_b=np.False_), a.T, a)


def test_read_only_out_is_refused():
    out = np.empty((3, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: array is read-only"):
        matmul(F32, G32, out=out)


# ---------------------------------------------------------------- aliased out

# Square sizes: skinny, dot-form, tiled with B in place and packed (512: the case,
# off by 3e9 before out= was checked for overlap).
ALIAS_SIZES = [1, 3, 16, 17, 64, 130, 512]


@settings(max_examples=40, deadline=None)
@given(
    n=st.sampled_from(ALIAS_SIZES),
    alias=st.sampled_from(["a", "b", "both"]),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_out_may_be_an_operand(n, alias, trans_a, trans_b, dtype, seed, numerics):
    """matmul(a, b, out=a), out=b and matmul(x, x, out=x) give the product of the inputs as
    they were before the call, like NumPy."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = a if alias == "both" else rng.standard_normal((n, n)).astype(dtype)
    op_a = a.T.copy() if trans_a else a.copy()
    op_b = b.T.copy() if trans_b else b.copy()
    out = b if alias == "b" else a
    got = matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out)
    assert got is out
    numerics.assert_product_close(out, op_a, op_b)


@settings(max_examples=60, deadline=None)
@given(
    m=st.sampled_from(SIZES),
    k=st.sampled_from([1, 7, 64, 257]),
    n=st.sampled_from(SIZES),
    transposed_a=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_out_partly_overlapping_the_operands(m, k, n, transposed_a, dtype, seed, data, numerics):
    """a, b and out are views into one buffer at arbitrary, mostly overlapping offsets; a may
    be an F-ordered view (read through its C-ordered base with the flag flipped)."""
    sizes = (m * k, k * n, m * n)
    buf = np.random.default_rng(seed).standard_normal(max(sizes) + min(sizes)).astype(dtype)
    at = [
        data.draw(st.integers(0, buf.size - size), label=f"offset {i}")
        for i, size in enumerate(sizes)
    ]
    a = buf[at[0] : at[0] + m * k]
    a = a.reshape(k, m).T if transposed_a else a.reshape(m, k)
    b = buf[at[1] : at[1] + k * n].reshape(k, n)
    out = buf[at[2] : at[2] + m * n].reshape(m, n)
    op_a, op_b = a.copy(), b.copy()
    assert matmul(a, b, out=out) is out
    numerics.assert_product_close(out, op_a, op_b)

"""dot: float64 reference on random vectors, accuracy vs np.dot, thread independence, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcore_cv
from fastcore_cv.kernels.dot import BLOCK, CHUNK, PARALLEL_MIN, dot

DTYPES = [np.float32, np.float64]
# Lengths around the block, chunk and parallel-threshold edges, primes, and 1.
EDGE_LENGTHS = [1, 2, 3, 7, 13, 31, BLOCK - 1, BLOCK, BLOCK + 1, 1009, CHUNK - 1, CHUNK + 1]
EDGE_LENGTHS += [PARALLEL_MIN - 1, PARALLEL_MIN, 65_537]


def pair(n: int, dtype, seed: int, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    y = (rng.standard_normal(n) + offset).astype(dtype)
    return x, y


def reference(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Exact-enough float64 dot and sum |x*y| (the scale every rounding error is bounded by)."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    return float(np.dot(x64, y64)), float(np.abs(x64 * y64).sum())


def tolerance(n: int, dtype) -> float:
    """Worst-case summation bound: any order of m additions errs by <= m * eps * sum|x*y|.

    The longest chain is one block (BLOCK terms in the input dtype) plus the float64 sums of
    blocks and chunks; "+ 2" covers the products' own rounding and the final conversion.
    """
    terms = min(n, BLOCK) + CHUNK // BLOCK + n // CHUNK + 2
    return terms * float(np.finfo(dtype).eps)


@pytest.fixture
def threads():
    """Let a test change the thread count; restore the default policy afterwards."""
    before = fastcore_cv.get_num_threads()
    yield fastcore_cv.set_num_threads
    fastcore_cv.set_num_threads(before)


@settings(max_examples=60, deadline=None)
@given(
    n=st.one_of(st.sampled_from(EDGE_LENGTHS), st.integers(1, 3000)),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
    offset=st.sampled_from([0.0, 1.0]),
)
def test_matches_float64_reference(n, dtype, seed, offset):
    x, y = pair(n, dtype, seed, offset)
    want, scale = reference(x, y)
    got = dot(x, y)
    assert isinstance(got, float)
    assert abs(got - want) <= tolerance(n, dtype) * scale


@pytest.mark.parametrize("n", [1000, 100_000, 1_000_000])
def test_float32_at_least_as_accurate_as_numpy(n):
    # Mean over 12 fixed pairs: ours was 1.5x (n=1e3) to 28x (n=1e6) more accurate.
    ours, theirs = [], []
    for seed in range(12):
        x, y = pair(n, np.float32, seed, offset=0.3)
        want, scale = reference(x, y)
        ours.append(abs(dot(x, y) - want) / scale)
        theirs.append(abs(float(np.dot(x, y)) - want) / scale)
    assert np.mean(ours) <= np.mean(theirs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_result_on_one_and_two_threads(dtype, threads):
    x, y = pair(3 * PARALLEL_MIN + 11, dtype, seed=5)
    threads(1)
    one = dot(x, y)
    threads(2)
    two = dot(x, y)
    assert one == two  # fixed chunking and summation order: bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_gives_zero_like_numpy(dtype):
    x = np.zeros(0, dtype)
    assert dot(x, x) == float(np.dot(x, x)) == 0.0


@pytest.mark.parametrize("n", [5, PARALLEL_MIN + 3])
def test_nan_and_inf_propagate(n):
    x, y = pair(n, np.float32, seed=1)
    x[n // 2] = np.nan
    assert np.isnan(dot(x, y))
    x[n // 2] = np.inf
    y[n // 2] = 1.0
    assert dot(x, y) == np.inf
    y[n // 2] = 0.0  # inf * 0 = nan, as in numpy
    assert np.isnan(dot(x, y))


@pytest.mark.parametrize("n", [101, 2 * PARALLEL_MIN + 1])
def test_strided_and_read_only_inputs(n):
    x, y = pair(2 * n, np.float64, seed=2)
    xs, ys = x[::2], y[1::2]  # strided views are copied, not misread
    want, scale = reference(xs, ys)
    assert abs(dot(xs, ys) - want) <= tolerance(n, np.float64) * scale
    xr, yr = xs.copy(), ys.copy()
    xr.flags.writeable = False
    yr.flags.writeable = False
    assert dot(xr, yr) == dot(xs.copy(), ys.copy())
    assert dot(xr, ys.copy()) == dot(xs.copy(), ys.copy())


@pytest.mark.parametrize("n", [10, PARALLEL_MIN + 10])
def test_length_mismatch_names_y(n):
    x = np.ones(n, np.float32)
    with pytest.raises(ValueError, match="y: axis 0 has length"):
        dot(x, np.ones(n - 1, np.float32))
    with pytest.raises(ValueError, match="y: axis 0 has length"):
        dot(x[: n // 2], np.ones(n, np.float32))


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        ([1.0, 2.0], np.ones(2), TypeError, "x: expected a numpy.ndarray"),
        (np.ones(2), (1.0, 2.0), TypeError, "y: expected a numpy.ndarray"),
        (np.float64(1.0), np.ones(1), TypeError, "x: expected a numpy.ndarray"),
        (np.ones(2, np.int64), np.ones(2, np.int64), TypeError, "x: expected dtype"),
        (np.ones(2), np.ones(2, np.float16), TypeError, "y: expected dtype"),
        (np.ones(2, np.float32), np.ones(2), TypeError, "x=float32, y=float64"),
        (np.ones((2, 2)), np.ones((2, 2)), ValueError, "x: expected a rank-1"),
        (np.ones(4), np.ones((2, 2)), ValueError, "y: expected a rank-1"),
        (np.array(1.0), np.array(1.0), ValueError, "x: expected a rank-1"),
    ],
)
def test_bad_inputs(x, y, error, match):
    with pytest.raises(error, match=match):
        dot(x, y)

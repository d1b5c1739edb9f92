"""The shared argument checker: every rejection names the argument it is about."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.kernels._checks import (
    check_choice,
    check_float_array,
    check_no_overlap,
    check_number,
    check_out,
    check_same_dtype,
    check_targets,
    overlaps,
)


def test_float_array_passes_contiguous_input_through_without_copy():
    x = np.ones((3, 4), np.float32)
    assert check_float_array(x, "x", ndim=2) is x


def test_float_array_copies_non_contiguous_views_to_equal_contiguous_arrays():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    view = base[:, ::2]
    got = check_float_array(view, "x", ndim=2)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, view)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ([1.0, 2.0], TypeError, "x: expected a numpy.ndarray, got list"),
        (np.ones(3, np.int64), TypeError, "x: expected dtype float32 or float64, got int64"),
        (np.ones(3, np.float16), TypeError, "x: expected dtype .* got float16"),
        (np.array([None, 1.0]), TypeError, "x: expected dtype .* got object"),
        (np.ones((2, 2), np.float32), ValueError, "x: expected a rank-1 array, got rank 2"),
        (np.ones(0, np.float32), ValueError, "x: empty array"),
    ],
)
def test_float_array_rejections_name_the_argument(bad, error, message):
    with pytest.raises(error, match=message):
        check_float_array(bad, "x", ndim=1)


def test_float_array_accepts_any_listed_rank_and_empty_when_allowed():
    assert check_float_array(np.ones((2, 3)), "x", ndim=(1, 2)).shape == (2, 3)
    assert check_float_array(np.ones(0), "x", ndim=1, allow_empty=True).size == 0


def test_same_dtype_lists_every_argument_on_mismatch():
    with pytest.raises(TypeError, match="a=float32, b=float64"):
        check_same_dtype(a=np.ones(1, np.float32), b=np.ones(1, np.float64))
    assert check_same_dtype(a=np.ones(1), b=None) == np.float64


@pytest.mark.parametrize(
    "out, error, message",
    [
        (np.ones((2, 3), np.float64), TypeError, "out: expected dtype float32"),
        (np.ones((3, 2), np.float32), ValueError, r"out: expected shape \(2, 3\)"),
        (np.ones((3, 2), np.float32).T, ValueError, "out: must be C-contiguous"),
        ("nope", TypeError, "out: expected a numpy.ndarray"),
    ],
)
def test_out_rejections(out, error, message):
    with pytest.raises(error, match=message):
        check_out(out, "out", (2, 3), np.dtype(np.float32))


def test_out_rejects_read_only_buffer():
    out = np.ones((2, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: array is read-only"):
        check_out(out, "out", (2, 3), np.dtype(np.float32))


def test_targets_are_checked_for_kind_length_and_range():
    assert check_targets(np.array([0, 2], np.int32), "t", 2, 3).dtype == np.int64
    with pytest.raises(TypeError, match="t: expected integer class indices"):
        check_targets(np.array([0.0, 1.0]), "t", 2, 3)
    with pytest.raises(ValueError, match="t: axis 0 has length 3, expected 2"):
        check_targets(np.array([0, 1, 2]), "t", 2, 3)
    with pytest.raises(ValueError, match=r"t: class index 3 out of range \[0, 3\)"):
        check_targets(np.array([0, 3]), "t", 2, 3)
    with pytest.raises(ValueError, match=r"t: class index -1 out of range"):
        check_targets(np.array([-1, 0]), "t", 2, 3)
    with pytest.raises(ValueError, match=r"t: class index 7 out of range"):
        check_targets(np.array([0, 7], np.uint8), "t", 2, 3)


@pytest.mark.parametrize("value", [2**64 - 1, 2**63, 2**63 + 5])
def test_huge_uint64_targets_are_reported_as_given(value):
    """uint64 indices >= 2**63 wrap negative in int64; the message shows the real value."""
    with pytest.raises(ValueError, match=rf"t: class index {value} out of range \[0, 3\)"):
        check_targets(np.array([0, value], np.uint64), "t", 2, 3)


def test_number_and_choice():
    assert check_number(np.float32(0.5), "lr", low=0.0) == 0.5
    with pytest.raises(ValueError, match="lr: must be >= 0.0"):
        check_number(-1, "lr", low=0.0)
    with pytest.raises(ValueError, match="lr: expected a finite number"):
        check_number(float("nan"), "lr")
    with pytest.raises(TypeError, match="lr: expected a number, got str"):
        check_number("0.1", "lr")
    with pytest.raises(ValueError, match="label_smoothing: must be <= 1.0"):
        check_number(1.5, "label_smoothing", low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"reduction: expected one of \['mean', 'sum'\]"):
        check_choice("avg", "reduction", ["mean", "sum"])


def test_overlaps_is_exact_for_views_of_one_buffer():
    buf = np.zeros(100)
    assert overlaps(buf, buf) and overlaps(buf[:50], buf[49:])
    assert not overlaps(buf[:50], buf[50:])  # same base, disjoint ranges
    assert overlaps(buf[:60].reshape(6, 10).T, buf[55:])  # F-ordered view
    assert not overlaps(buf[::2], buf[1::2])  # interleaved: ranges overlap, bytes do not
    assert overlaps(buf[::2], buf[10:11])
    assert not overlaps(np.zeros(5), np.zeros(5))
    assert overlaps(buf[:10], np.zeros(3), buf[5:]) and not overlaps(buf[:10], buf[10:], buf[20:])
    raw = bytearray(80)  # arrays over memory NumPy does not own
    one, two = np.frombuffer(raw, np.float64), np.frombuffer(raw, np.float64)[5:]
    assert overlaps(one, two) and not overlaps(one[:5], two)  # two owners, one memory


@settings(max_examples=200, deadline=None)
@given(
    a=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 3)),
    b=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 3)),
    same_tensor=st.booleans(),
)
def test_overlaps_of_numpy_views_of_torch_tensors_is_exact(a, b, same_tensor):
    """optim.FlatGroup passes ``.numpy()`` views of torch tensors (their base owns nothing):
    slices of one tensor overlap exactly when their bytes do; two tensors never do."""
    t = torch.zeros(40, dtype=torch.float32)
    u = t if same_tensor else torch.zeros(40, dtype=torch.float32)
    x, y = t[slice(*a)].numpy(), u[slice(*b)].numpy()
    assert x.size == 0 or not x.flags.owndata  # the fast ownership test never applied here
    want = same_tensor and np.shares_memory(x, y, max_work=None)
    assert overlaps(x, y) == want and overlaps(y, x) == want
    assert overlaps(x, np.zeros(3, np.float32), y) == want


def test_no_overlap_names_both_arguments():
    buf = np.zeros(10, np.float32)
    check_no_overlap("out", buf[:5], a=buf[5:], b=None)
    with pytest.raises(ValueError, match="out: shares memory with b; pass separate arrays"):
        check_no_overlap("out", buf[:5], a=np.zeros(5, np.float32), b=buf[4:])

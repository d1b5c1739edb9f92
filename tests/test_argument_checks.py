"""The package-wide scalar checks: each error names its argument."""

from __future__ import annotations

import numpy as np
import pytest

from fastcore_cv.checks import check_bool, check_int


@pytest.mark.parametrize(
    "value, low, high", [(1, 1, None), (0, 0, None), (8, 8, 256), (256, 8, 256)]
)
def test_check_int_accepts_ints_in_range(value, low, high):
    assert check_int(value, "n", low, high) == value


@pytest.mark.parametrize(
    "value, low, high, message",
    [
        (0, 1, None, "n: expected an int >= 1, got 0"),
        (True, 0, None, "n: expected an int >= 0, got True"),
        (2.0, 1, None, "n: expected an int >= 1, got 2.0"),
        ("3", 1, None, "n: expected an int >= 1, got '3'"),
        (np.int64(3), 1, None, "n: expected an int >= 1, got np.int64(3)"),
        (7, 8, 256, "n: expected an int in [8, 256], got 7"),
        (257, 8, 256, "n: expected an int in [8, 256], got 257"),
    ],
)
def test_check_int_refuses_with_the_argument_named(value, low, high, message):
    with pytest.raises(ValueError) as e:
        check_int(value, "n", low, high)
    assert str(e.value) == message


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_check_bool_accepts_python_and_numpy_bools(value):
    got = check_bool(value, "flag")
    assert got is bool(value)


@pytest.mark.parametrize(
    "value, message",
    [
        ("yes", "flag: expected a bool, got str 'yes'"),
        ("", "flag: expected a bool, got str ''"),
        (1, "flag: expected a bool, got int 1"),
        (0.0, "flag: expected a bool, got float 0.0"),
        (None, "flag: expected a bool, got NoneType None"),
        (np.array([True]), "flag: expected a bool, got ndarray array([ True])"),
    ],
)
def test_check_bool_refuses_truthy_and_falsy_non_bools(value, message):
    with pytest.raises(TypeError) as e:
        check_bool(value, "flag")
    assert str(e.value) == message

"""Scalar argument checks shared by the whole package: each error names the argument.

Plain Python + NumPy (no torch, no compiled kernels), so the torch-free inference path and
the kernels can both use them without pulling the other in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def check_int(value: object, name: str, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) in [``low``, ``high``], else raise
    ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an int {bound}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` as a bool if it is one (Python or NumPy), else raise TypeError naming
    ``name``: a flag given as "yes", 1 or None is refused rather than read as true or false."""
    if value is True or value is False:  # the common case, no isinstance call
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


def check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_number(
    value: object, name: str, *, low: float | None = None, high: float | None = None
) -> float:
    """Return ``value`` as a finite float in [``low``, ``high``], or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):  # math, not numpy: 0.02 us instead of 1 us per call
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high}, got {value}")
    return value

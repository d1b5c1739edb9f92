"""The compiled core: Numba kernels, NumPy in and NumPy out (this package never imports torch).

One file per idea, in the lesson's order: ``dot`` (summing up things multiplied together),
``gemm`` (matmul: every output a dot product), ``linear`` (a layer: x W^T + b, ReLU), ``loss``
(softmax cross-entropy and its gradient, argmax), ``sgd`` and ``adam`` (the weight updates)
and ``flat`` (a whole model's parameters in one buffer, so one call updates them all).

Import functions from here (``from fastcore_cv.kernels import matmul``) or from their
modules (``from fastcore_cv.kernels.gemm import matmul``).
"""

from __future__ import annotations

import time

import numpy as np

from fastcore_cv.kernels._checks import FLOAT_DTYPES  # public: the dtypes every kernel takes
from fastcore_cv.kernels.adam import adam_update
from fastcore_cv.kernels.dot import dot
from fastcore_cv.kernels.flat import FlatBuffer
from fastcore_cv.kernels.gemm import matmul
from fastcore_cv.kernels.gemm import warmup as _warmup_matmul
from fastcore_cv.kernels.linear import linear, linear_backward
from fastcore_cv.kernels.loss import argmax, log_softmax, softmax, softmax_cross_entropy
from fastcore_cv.kernels.sgd import sgd_update

__all__ = [
    "FLOAT_DTYPES",
    "FlatBuffer",
    "adam_update",
    "argmax",
    "dot",
    "linear",
    "linear_backward",
    "log_softmax",
    "matmul",
    "sgd_update",
    "softmax",
    "softmax_cross_entropy",
    "warmup",
]


def _exercise(dtype: np.dtype) -> dict[str, object]:
    """One call per kernel and code path (serial and parallel sizes) for ``dtype``."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    small, large = arr(64), arr(200_000)
    x, w, b = arr(64, 32), arr(16, 32), arr(16)
    logits, many = arr(8, 10), arr(512, 100)
    p, g, m = arr(100_000), arr(100_000), arr(100_000)

    def layer() -> None:
        out = linear(x, w, b, activation="relu")
        linear_backward(x, w, out, activation="relu", out=out)

    return {
        "dot": lambda: (dot(small, small), dot(large, large)),
        "matmul": lambda: _warmup_matmul((dtype,)),
        "linear": layer,
        "softmax_cross_entropy": lambda: (
            softmax_cross_entropy(logits, np.zeros(8, np.int64)),
            softmax_cross_entropy(many, np.zeros(512, np.int64)),
        ),
        "log_softmax/softmax/argmax": lambda: (
            log_softmax(logits),
            softmax(many),
            argmax(many),
        ),
        "sgd_update": lambda: (
            sgd_update(p[:100], g[:100], m[:100], lr=0.1, momentum=0.9),
            sgd_update(p, g, m, lr=0.1, momentum=0.9),
        ),
        "adam_update": lambda: (
            adam_update(p[:100], g[:100], m[:100], m[100:200], lr=1e-3),
            adam_update(p[:50_000], g[:50_000], m[:50_000], m[50_000:], lr=1e-3),
        ),
    }


def warmup() -> dict[str, float]:
    """Compile, or load from Numba's cache, every kernel path for float32 and float64.

    Returns seconds per kernel (both dtypes). Run once after install
    (``python -m fastcore_cv warmup``) so the first training step does not pay for it.
    """
    from fastcore_cv.threads import get_num_threads, set_num_threads

    before = get_num_threads()
    set_num_threads(2)  # the parallel paths compile only when taken
    seconds: dict[str, float] = {}
    try:
        for dtype in FLOAT_DTYPES:
            for name, call in _exercise(dtype).items():
                start = time.perf_counter()
                call()
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    finally:
        set_num_threads(before)
    return seconds

"""matmul suite: float32 squares and the skinny shapes of a small classifier, vs numpy/torch.

Work is 2*M*N*K FLOP. Targets: squares >= 0.9x numpy on 1 thread and >= 0.8x on 2; skinny
shapes >= 1.0x numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastcore_cv.kernels.matmul import matmul, warmup

SUITE = "matmul"
THREADS = (1, 2)


def _square(n):
    return f"{n}x{n} @ {n}x{n}", (n, n), (n, n), False


# (case name, a shape, b shape as stored, trans_b)
CASES = [
    _square(256),
    _square(512),
    _square(1024),
    ("64x512 @ (10x512)^T  [Linear: x @ w.T]", (64, 512), (10, 512), True),
    ("64x784 @ 784x128", (64, 784), (784, 128), False),
    ("1x1280 @ 1280x1000", (1, 1280), (1280, 1000), False),
]


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warmup((np.float32,))


def _inputs(a_shape, b_shape):
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal(a_shape, dtype=np.float32),
        rng.standard_normal(b_shape, dtype=np.float32),
    )


def _work(a_shape, b_shape, trans_b):
    n = b_shape[0] if trans_b else b_shape[1]
    return 2 * a_shape[0] * a_shape[1] * n


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", ["fastcore_cv", "numpy", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[c[0].split()[0] + c[0].split()[2] for c in CASES])
def test_matmul(measure, case, impl, threads):
    name, a_shape, b_shape, trans_b = case
    a, b = _inputs(a_shape, b_shape)
    if impl == "fastcore_cv":
        out = np.empty((a_shape[0], b_shape[0] if trans_b else b_shape[1]), np.float32)
        fn, args = (lambda x, y: matmul(x, y, trans_b=trans_b, out=out)), (a, b)
    elif impl == "numpy":
        fn, args = ((lambda x, y: x @ y.T) if trans_b else (lambda x, y: x @ y)), (a, b)
    else:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fn, args = ((lambda x, y: x @ y.T) if trans_b else (lambda x, y: x @ y)), (ta, tb)
    measure(
        fn,
        *args,
        suite=SUITE,
        case=name,
        impl=impl,
        threads=threads,
        work=_work(a_shape, b_shape, trans_b),
        unit="FLOP",
        rounds=20 if a_shape[0] >= 1024 else None,  # keep the suite short
    )

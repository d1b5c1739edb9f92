"""matmul suite: float32 squares and the skinny shapes of a small classifier, vs numpy/torch.

Work is 2*M*N*K FLOP. Targets: squares >= 0.9x numpy on 1 thread and >= 0.8x on 2; skinny
shapes >= 1.0x numpy. The MNIST MLP's two big products (784-256 layer, batch 64) are here
too: x @ w.T (dot form) and the weight gradient g.T @ x with g half zeros, as a ReLU leaves
it (zero-skipping path; numpy and torch multiply the zeros, so work counts them too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastcore_cv.kernels.gemm import matmul, warmup

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
    ("64x784 @ (256x784)^T  [MLP layer 1: x @ w.T]", (64, 784), (256, 784), True),
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


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", ["fastcore_cv", "numpy", "torch"])
def test_relu_gradient_matmul(measure, impl, threads):
    """grad_w = g.T @ x for the MLP's first layer: g (64 x 256) half exact zeros."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((64, 256), dtype=np.float32)
    g[rng.random(g.shape) < 0.5] = 0
    x = rng.standard_normal((64, 784), dtype=np.float32)
    if impl == "fastcore_cv":
        out = np.empty((256, 784), np.float32)
        fn, args = (lambda a, b: matmul(a, b, trans_a=True, out=out)), (g, x)
    elif impl == "numpy":
        fn, args = (lambda a, b: a.T @ b), (g, x)
    else:
        fn, args = (lambda a, b: a.T @ b), (torch.from_numpy(g), torch.from_numpy(x))
    measure(
        fn,
        *args,
        suite=SUITE,
        case="(64x256, 50% zeros)^T @ 64x784  [MLP layer 1: g.T @ x]",
        impl=impl,
        threads=threads,
        work=2 * 64 * 256 * 784,
        unit="FLOP",
    )

"""Suite "dot": fastcore_cv dot vs np.dot (OpenBLAS sdot) and torch.dot, float32.

n=1e3 measures call overhead (validation + dispatch), n=1e5 an L2-resident vector, n=1e7
memory bandwidth (two 40 MB vectors). Work = bytes read (8 per element), so rate = GB/s.
"""

import numpy as np
import pytest
import torch

from fastcore_cv.kernels.dot import dot

SIZES = [1_000, 100_000, 10_000_000]
IMPLS = ["fastcore_cv", "numpy", "torch"]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"n={n:.0e}")
def vectors(request):
    n = request.param
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    return n, x, y, torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", IMPLS)
def test_dot(measure, vectors, impl, threads):
    n, x, y, tx, ty = vectors
    # Each impl is timed as the call a user writes, f(x, y), in an identical lambda:
    # pytest-benchmark's own fn(*args, **kwargs) call costs a Python function such as dot
    # 40-80 ns more (a new interpreter frame) than a C function such as np.dot, which would
    # skew the n=1e3 ratio (~0.4 us per call) by ~10%.
    fn = {
        "fastcore_cv": lambda: dot(x, y),
        "numpy": lambda: np.dot(x, y),
        "torch": lambda: torch.dot(tx, ty),
    }[impl]
    rounds = 20 if n >= 10_000_000 else None
    measure(
        fn,
        suite="dot",
        case=f"n={n:.0e} float32",
        impl=impl,
        threads=threads,
        work=8 * n,
        unit="B",
        rounds=rounds,
    )

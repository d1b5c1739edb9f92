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
CALLS = 100


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
    # Each impl is timed as the call a user writes, f(x, y), in an identical loop. At n=1e3 a
    # call takes ~0.4 us, and pytest-benchmark's own per-call harness (~0.1 us, more for a
    # Python function like dot than for a C one like np.dot) would dilute the ratio (1.37x
    # instead of timeit's 1.5x), so there one timed call runs the loop CALLS times.
    calls = CALLS if n <= 1_000 else 1
    f = {"fastcore_cv": dot, "numpy": np.dot, "torch": torch.dot}[impl]
    a, b = (tx, ty) if impl == "torch" else (x, y)

    def fn():
        for _ in range(calls):
            f(a, b)

    rounds = 20 if n >= 10_000_000 else None
    measure(
        fn,
        suite="dot",
        case=f"n={n:.0e} float32" + (f", {calls} calls" if calls > 1 else ""),
        impl=impl,
        threads=threads,
        work=8 * n * calls,
        unit="B",
        rounds=rounds,
    )

"""The thread policy: one count for Numba, torch and BLAS, and no spinning runtimes fighting."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each test starts fresh interpreters

PROBE = r"""
import json, os, sys
if sys.argv[1] == "numpy first":
    import numpy
import fastcore_cv
import numba, torch
from threadpoolctl import threadpool_info
fastcore_cv.threads.sync_torch()
before = dict(numba=numba.get_num_threads(), torch=torch.get_num_threads(),
              blas=[d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"])
applied = fastcore_cv.set_num_threads(1)
after = dict(numba=numba.get_num_threads(), torch=torch.get_num_threads(),
             blas=[d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"])
print(json.dumps(dict(before=before, after=after, applied=applied,
                      timeout=os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                      cores=fastcore_cv.threads.available_cores())))
"""


def probe(order: str) -> dict:
    env_drop = ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")
    env = {k: v for k, v in __import__("os").environ.items() if k not in env_drop}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, order], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_uses_every_core_and_stops_blas_spinning():
    r = probe("fastcore_cv first")
    assert r["timeout"] == "4"
    assert r["before"]["numba"] == r["cores"]
    assert r["before"]["torch"] == r["cores"]
    assert all(n == r["cores"] for n in r["before"]["blas"])


def test_numpy_loaded_first_falls_back_to_single_thread_blas():
    # OpenBLAS read its spin timeout before fastcore_cv could set it: BLAS goes to 1 thread.
    r = probe("numpy first")
    assert r["before"]["numba"] == r["cores"]
    assert r["before"]["blas"] and all(n == 1 for n in r["before"]["blas"])


def test_set_num_threads_sets_all_three_runtimes():
    r = probe("fastcore_cv first")
    assert r["applied"] == 1
    assert r["after"]["numba"] == 1
    assert r["after"]["torch"] == 1
    assert all(n == 1 for n in r["after"]["blas"])


@pytest.mark.parametrize("bad", [0, -3])
def test_set_num_threads_rejects_counts_below_one(bad):
    import fastcore_cv

    with pytest.raises(ValueError, match="n: number of threads"):
        fastcore_cv.set_num_threads(bad)


@pytest.mark.parametrize("bad", ["2", 2.0, True, None])
def test_set_num_threads_rejects_non_integers(bad):
    import fastcore_cv

    with pytest.raises(TypeError, match="n: expected an int"):
        fastcore_cv.set_num_threads(bad)


def test_set_num_threads_clips_to_numba_maximum():
    import numba

    import fastcore_cv

    try:
        assert fastcore_cv.set_num_threads(10_000) == numba.config.NUMBA_NUM_THREADS
    finally:
        fastcore_cv.set_num_threads(fastcore_cv.threads.available_cores())

"""One thread policy for Numba, torch and BLAS together.

Measured on 2 shared cores (bench/RESULTS.md, "thread policy"): numpy's threaded OpenBLAS
alternating with a Numba ``prange`` kernel made the kernel 270x slower (14 us -> 3.8 ms) and
the matmul 20x slower, because each runtime's idle threads spin on the cores the other needs.
torch and Numba did not fight (both GNU OpenMP). ``OMP_WAIT_POLICY=PASSIVE`` also cured it
but halved torch's speed, so the policy is instead:

- OpenBLAS idle threads stop spinning almost at once (``OPENBLAS_THREAD_TIMEOUT``, set by
  ``import fastcore_cv`` when numpy is not loaded yet);
- if numpy's OpenBLAS was loaded before fastcore_cv, the timeout cannot apply, so by default
  BLAS runs on one thread (the kernels, not numpy, do this library's heavy lifting);
- ``set_num_threads(n)`` sets the same count for Numba, torch and BLAS in one call.
"""

from __future__ import annotations

import os
import sys

# Thread policy, part 1: after a threaded OpenBLAS call its idle threads spin for a while and
# starve Numba's OpenMP threads, and the reverse: on 2 shared cores a 14 us kernel took 3.8 ms
# (bench/RESULTS.md, "thread policy"). OpenBLAS reads its spin timeout only when it loads, so
# it is set here, before numpy (``import fastcore_cv`` imports this module first). A user's own
# setting wins.
BLAS_TIMEOUT_APPLIES = "numpy" not in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
if "FASTCORE_CV_CACHE_DIR" in os.environ:
    os.environ.setdefault("NUMBA_CACHE_DIR", os.environ["FASTCORE_CV_CACHE_DIR"])

try:  # the inference-only install has no Numba: it comes with the [train] extra
    import numba  # noqa: E402  (after the environment above)
except ModuleNotFoundError:
    numba = None
from threadpoolctl import threadpool_limits  # noqa: E402

_state: dict[str, int | None] = {"n": None}


def available_cores() -> int:
    """Cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def machine_line() -> str:
    """The machine a figure was measured on: CPU model, cores, OS, Python, key versions
    (speed figures are only comparable within one such line)."""
    import contextlib
    import platform
    from pathlib import Path

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("numpy", "numba", "torch", "onnxruntime"):
        with contextlib.suppress(ImportError):
            versions.append(f"{mod} {__import__(mod).__version__}")
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, " + ", ".join(versions)
    )


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int number of threads, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n: number of threads must be >= 1, got {n}")
    return n if numba is None else min(n, numba.config.NUMBA_NUM_THREADS)


def set_num_threads(n: int) -> int:
    """Use ``n`` threads in Numba kernels, torch and BLAS alike; return the count applied.

    Numba cannot go above NUMBA_NUM_THREADS (fixed when Numba starts), so ``n`` is clipped
    to it. torch is set now if it is loaded, else when fastcore_cv's torch modules load.
    """
    n = _check_count(n)
    if numba is not None:
        numba.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")
    _state["n"] = n
    sync_torch()
    return n


def get_num_threads() -> int:
    """The thread count applied to Numba and torch (set on first use: all available cores)."""
    if _state["n"] is None:
        _apply_default()
    return _state["n"]  # type: ignore[return-value]


def _apply_default() -> None:
    set_num_threads(available_cores())
    if not BLAS_TIMEOUT_APPLIES:
        threadpool_limits(limits=1, user_api="blas")


def sync_torch() -> None:
    """Apply the policy's thread count to torch if torch is loaded (kernels never import it)."""
    torch = sys.modules.get("torch")
    n = _state["n"]
    if torch is not None and n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)

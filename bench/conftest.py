"""Shared benchmark fixture: every timing is tagged so bench/report.py can turn a run into
ratio tables (ours vs numpy/torch/onnxruntime measured in the same run)."""

from __future__ import annotations

import contextlib
import ctypes

import pytest

import fastcore_cv

OURS = "fastcore_cv"


def pin_allocator() -> None:
    """Fix glibc's mmap/trim thresholds for the whole run (as MALLOC_MMAP_THRESHOLD_ would).

    Its adaptive threshold moved torch eager EfficientNet-Lite0 between ~21 and ~30 ms per
    image within one process, depending on what ran before (onnxruntime sessions flipped
    it): a baseline must not look slow by accident. Pinned, torch stayed at 20.6-21.5 ms.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)
        libc.mallopt(m_trim_threshold, 2**30)


pin_allocator()


@pytest.fixture
def measure(benchmark):
    """Time ``fn(*args)`` under a thread count, tagged with suite/case/impl for the report.

    ``impl`` is OURS for the library's own code, else the baseline's name ("numpy",
    "torch", ...). ``work`` and ``unit`` (e.g. 2*m*n*k, "FLOP") let the report print a rate.
    """

    def _measure(fn, *args, suite, case, impl, threads, work=None, unit=None, rounds=None):
        fastcore_cv.set_num_threads(threads)
        fn(*args)  # compile / warm caches outside the timing
        benchmark.group = f"{suite} | {case} | {threads} thread(s)"
        benchmark.extra_info.update(
            suite=suite, case=case, impl=impl, threads=threads, work=work, unit=unit
        )
        if rounds is None:
            return benchmark(fn, *args)
        return benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=1)

    return _measure

"""Single-call latency, the way a deployed model is judged: p50 and p99 of many timed calls.

Torch-free, so the demo, ``fastcore-cv bench`` and the benchmarks can share it. The first
calls are run untimed (``warmup``): onnxruntime's first runs are 1.5-3x slower.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles (ms) of ``runs`` timed calls of one function."""

    runs: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in vars(self).items()}

    def __str__(self) -> str:
        return f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms ({self.runs} runs)"


def latency_stats(seconds: np.ndarray | list[float]) -> LatencyStats:
    """Percentiles of a list of call times given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("seconds: no timings to summarise")
    return LatencyStats(
        runs=int(ms.size),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
    )


def measure_latency(fn: Callable[[], object], runs: int = 200, warmup: int = 5) -> LatencyStats:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times, each timed on its own."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs: expected an int >= 1, got {runs!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    clock = time.perf_counter
    for i in range(runs):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    return latency_stats(times)

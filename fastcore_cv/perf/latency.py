"""Single-call latency, the way a deployed model is judged: p50 and p99 of many timed calls.

Torch-free (``torch_calls`` imports torch only when called), so the demo and ``fastcore-cv
bench`` share it. The first calls are run untimed (``warmup``): onnxruntime's first runs
are 1.5-3x slower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcore_cv.checks import check_int
from fastcore_cv.vision.preprocessing import ImageSource


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
    check_int(runs, "runs")
    check_int(warmup, "warmup", 0)
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    clock = time.perf_counter
    for i in range(runs):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    return latency_stats(times)


MODEL_ONLY, IMAGE_TO_LABEL = "model only", "image -> label"


def predictor_calls(predictor: Any, image: ImageSource) -> dict[str, Callable[[], object]]:
    """The two calls a deployed model is timed on: a preprocessed array -> probabilities
    (model only), and the image (path or bytes) -> its label, decoding included."""
    from fastcore_cv.vision.preprocessing import preprocess

    x = preprocess(image, predictor.config, max_pixels=predictor.max_pixels)[None]
    return {
        MODEL_ONLY: lambda: predictor.run(x),
        IMAGE_TO_LABEL: lambda: predictor.predict(image, top_k=1).label,
    }


def torch_calls(
    model: Any, config: Any, classes: Sequence[str], image: ImageSource
) -> dict[str, Callable[[], object]]:
    """The same two calls in torch eager mode (eval, ``inference_mode``, torch's own layers):
    the baseline the Predictor is compared with. Imports torch, so only call it when a torch
    comparison is wanted."""
    import torch

    from fastcore_cv.export.onnx_export import exportable
    from fastcore_cv.vision.preprocessing import preprocess

    eager = exportable(model)
    x = torch.from_numpy(preprocess(image, config)[None])

    def probabilities(t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(eager(t), dim=1)

    def label() -> str:
        t = torch.from_numpy(preprocess(image, config)[None])
        return classes[int(probabilities(t).argmax())]

    return {MODEL_ONLY: lambda: probabilities(x), IMAGE_TO_LABEL: label}

"""Suite "predict": single-image latency on the CPU, 1 thread, EfficientNet-Lite0 at 224 px
(ImageNet weights, 1000 classes).

- model only: one preprocessed (1, 3, 224, 224) array -> probabilities. fastcore_cv is the
  Predictor's onnxruntime session (fp32, or static per-channel int8); torch is the same
  model in eager mode under ``inference_mode``.
- JPEG to label: the bytes of a 451x300 JPEG photo -> class name, decode included.
  fastcore_cv is ``Predictor.predict``; torch runs the same preprocessing, then the model.
Targets: fp32 >= 3x torch eager (p50), int8 >= 6x, JPEG to label p50 <= 10 ms.
The median is pytest-benchmark's; p50/p99 in ms are also written to ``extra_info``.
"""

from __future__ import annotations

import lite0_models
import numpy as np
import pytest
import torch

from fastcore_cv.export import Predictor
from fastcore_cv.vision.preprocessing import preprocess

SUITE = "predict"
MODEL = lite0_models.NAME
ROUNDS = {"torch": 60, "fastcore_cv": 300}  # ~2-3 s each; enough rounds for a p99


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The pretrained model, its fp32 export and its int8 quantization (lite0_models.py)."""
    built = lite0_models.build(tmp_path_factory.mktemp("predict"))
    return {
        "torch": built.model,
        "fp32": Predictor(built.fp32, threads=1),
        "int8": Predictor(built.int8, threads=1),
        "config": built.config,
        "jpeg": lite0_models.chelsea_jpeg(),
    }


def _tails(benchmark) -> None:
    """p50 and p99 (ms) of the timed rounds into extra_info (absent when timing is off)."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        times = np.asarray(stats.stats.data) * 1e3
        benchmark.extra_info.update(p50_ms=float(np.median(times)),
                                    p99_ms=float(np.percentile(times, 99)))  # fmt: skip


def torch_probs(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(model(x), 1)


def torch_label(model, config, jpeg: bytes) -> int:
    x = torch.from_numpy(preprocess(jpeg, config)[None])
    return int(torch_probs(model, x).argmax())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("impl", ["fastcore_cv", "torch"])
def test_model_only(measure, benchmark, models, precision, impl):
    x = preprocess(models["jpeg"], models["config"])[None]
    case = f"{MODEL}, model only, {precision}"
    if impl == "torch":
        fn, arg = (lambda t: torch_probs(models["torch"], t)), torch.from_numpy(x)
    else:
        fn, arg = models[precision].run, x
    measure(fn, arg, suite=SUITE, case=case, impl=impl, threads=1, rounds=ROUNDS[impl])
    _tails(benchmark)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("impl", ["fastcore_cv", "torch"])
def test_jpeg_to_label(measure, benchmark, models, precision, impl):
    jpeg, case = models["jpeg"], f"{MODEL}, JPEG 451x300 to label, {precision}"
    if impl == "torch":
        fn = lambda b: torch_label(models["torch"], models["config"], b)  # noqa: E731
    else:
        fn = lambda b: models[precision].predict(b, top_k=1).label  # noqa: E731
    measure(fn, jpeg, suite=SUITE, case=case, impl=impl, threads=1, rounds=ROUNDS[impl])
    _tails(benchmark)

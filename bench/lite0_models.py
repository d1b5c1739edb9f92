"""The model the serving benchmarks measure, built one way in one place: EfficientNet-Lite0 at
224 px (ImageNet weights, 1000 classes named imagenet_i), exported fp32 with ``to_onnx`` and
quantized to static int8 with ``quantize``, calibrated on crops of scikit-image photos.

Used by test_bench_predict.py (single-image latency) and server_load.py (the server under
load), so both measure the same files.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image
from skimage import data

from fastcore_cv.export import quantize, to_onnx
from fastcore_cv.vision.models import efficientnet_lite0
from fastcore_cv.vision.preprocessing import PreprocessConfig

NAME = "EfficientNet-Lite0 224"


def photos() -> list[np.ndarray]:
    """Four real photos (HxWx3 uint8) from scikit-image."""
    return [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]


def calibration_crops(n: int = 40, seed: int = 0) -> list[np.ndarray]:
    """``n`` random square crops (50-100% of the short side) of ``photos()``."""
    rng = np.random.default_rng(seed)
    images, crops = photos(), []
    for i in range(n):
        p = images[i % len(images)]
        s = int(min(p.shape[:2]) * rng.uniform(0.5, 1.0))
        t, left = rng.integers(0, p.shape[0] - s + 1), rng.integers(0, p.shape[1] - s + 1)
        crops.append(np.ascontiguousarray(p[t : t + s, left : left + s]))
    return crops


def chelsea_jpeg() -> bytes:
    """The 451x300 cat photo as JPEG bytes (quality 90): the image every request sends."""
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build(folder: Path) -> SimpleNamespace:
    """Export and quantize into ``folder``: ``model`` (torch, eval), ``config``, ``fp32`` and
    ``int8`` (paths). The export is parity-checked on the photos."""
    model = efficientnet_lite0(pretrained=True).eval()
    config = PreprocessConfig(224)
    classes = [f"imagenet_{i}" for i in range(1000)]
    fp32, int8 = Path(folder) / "lite0.onnx", Path(folder) / "lite0.int8.onnx"
    to_onnx(model, fp32, classes=classes, preprocess_config=config, verify_images=photos())
    quantize(fp32, int8, calibration_crops())
    return SimpleNamespace(model=model, config=config, fp32=fp32, int8=int8)

"""Fixtures for the export tests: a tiny folder of real photo crops, a small CNN trained on
it with the Learner, and that model exported (fp32) and quantized (int8) once per session.

Exports take ~3 s each (torch.export + onnxscript), so the files are shared across tests.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from skimage import data

import fastcore_cv

# Three classes of real photos (scikit-image's): crops of each make one class folder.
PHOTOS = {"cat": data.chelsea, "coffee": data.coffee, "astronaut": data.astronaut}
SIZE = 32  # model input: small, so the CNN trains and exports in seconds


def write_crops(root: Path, per_class: int = 10, seed: int = 0) -> Path:
    """root/<class>/NNN.jpg|png: random square crops (40-60% of the photo's short side)."""
    rng = np.random.default_rng(seed)
    for name, load in PHOTOS.items():
        photo = load()
        h, w = photo.shape[:2]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            s = int(min(h, w) * rng.uniform(0.4, 0.6))
            t, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            crop = Image.fromarray(np.ascontiguousarray(photo[t : t + s, left : left + s]))
            crop = crop.resize((64, 64), Image.Resampling.BILINEAR)
            crop.save(root / name / (f"{i:03d}.png" if i % 3 == 0 else f"{i:03d}.jpg"))
    return root


def jpeg_bytes(img: Image.Image | np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(
        buf, "JPEG", quality=quality
    )
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """The class folder of real photo crops (3 classes x 10 images)."""
    return write_crops(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def trained(photos) -> SimpleNamespace:
    """A small CNN trained for 10 epochs on ``photos`` with the Learner (1 thread)."""
    from fastcore_cv.learner import Learner
    from fastcore_cv.vision import ImageDataLoaders
    from fastcore_cv.vision.models import simple_cnn

    before = fastcore_cv.get_num_threads()
    fastcore_cv.set_num_threads(1)  # tiny convs: a second thread only waits on a busy core
    try:
        dls = ImageDataLoaders.from_folder(
            photos, valid_pct=0.3, seed=0, size=SIZE, bs=4, augment=False
        )
        learn = Learner(simple_cnn(len(dls.classes), (8, 16)), dls, seed=0, progress="silent")
        learn.fit_one_cycle(10, 2e-2)  # 0.2 s; error rate 0 on the 9 validation crops
    finally:
        fastcore_cv.set_num_threads(before)
    return SimpleNamespace(learn=learn, dls=dls)


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> SimpleNamespace:
    """The trained model exported with ``export_learner`` (parity on its validation photos)."""
    from fastcore_cv.export import export_learner

    path = tmp_path_factory.mktemp("model") / "model.onnx"
    report = export_learner(trained.learn, path, dls=trained.dls)
    return SimpleNamespace(path=path, report=report, **vars(trained))


@pytest.fixture(scope="session")
def int8(exported, photos) -> SimpleNamespace:
    """The exported model quantized, calibrated and checked on the photo folder."""
    from fastcore_cv.export import quantize

    path = exported.path.with_name("model.int8.onnx")
    report = quantize(exported.path, path, photos, valid=photos)
    return SimpleNamespace(path=path, report=report)


@pytest.fixture(scope="session")
def imaging() -> SimpleNamespace:
    return SimpleNamespace(jpeg_bytes=jpeg_bytes, write_crops=write_crops)

"""``learn.export_onnx``: a Learner straight to one .onnx file for the torch-free Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastcore_cv.export import Predictor
from fastcore_cv.learner import DataLoaders, Learner
from fastcore_cv.vision.preprocessing import PreprocessConfig, preprocess

CLASSES = ["a", "b", "c"]


@pytest.fixture
def learn(one_thread):
    """A kernel-backed linear classifier of 8x8 colour images, trained one epoch."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3))
    learn = Learner(model, DataLoaders.from_tensors(x, y, x[:16], y[:16]), backend="numba",
                    progress="silent")  # fmt: skip
    learn.fit(1, 0.1)
    return learn


def test_learner_on_tensors_needs_classes_and_preprocessing(learn, tmp_path):
    with pytest.raises(ValueError, match="classes"):
        learn.export_onnx(tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="preprocess_config"):
        learn.export_onnx(tmp_path / "m.onnx", classes=CLASSES)
    assert not list(tmp_path.iterdir()), "a refused export must not leave a file"


def test_exported_learner_predicts_what_the_learner_predicts(learn, tmp_path):
    config = PreprocessConfig(size=8, resize_policy="squish")
    report = learn.export_onnx(tmp_path / "m.onnx", classes=CLASSES, preprocess_config=config)
    assert report.parity_max_abs_diff <= 1e-4
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(5)]
    predictor = Predictor(tmp_path / "m.onnx")
    x = torch.from_numpy(np.stack([preprocess(p, config) for p in photos]))
    learn.model.eval()
    with torch.no_grad():
        expected = torch.softmax(learn.model(x), 1).numpy()
    got = np.stack([predictor.predict(p).probabilities for p in photos])
    np.testing.assert_allclose(got, expected, atol=1e-5)

"""VisionLearner.train_sample (vision/transfer_learner.py), the sample of the eval-mode
training loss while unfrozen: training images drawn by a seed, through the validation
transform; plain tensor loaders take the Learner's generic path instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastcore_cv.learner import DataLoaders
from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_texture_folder
from fastcore_cv.vision.models import BodyHead, simple_cnn
from fastcore_cv.vision.preprocessing import preprocess
from fastcore_cv.vision.transfer import vision_learner

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: see tests/conftest.py


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    """Real texture photos (scikit-image), with augmentation on the training transform."""
    pytest.importorskip("skimage")
    folder = write_texture_folder(tmp_path_factory.mktemp("textures"), size=96, stride=96)
    return ImageDataLoaders.from_folder(folder, size=32, bs=8, augment=dict(scale=(0.5, 1.0)))


def gathered(sample):
    xs, ys = zip(*sample, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_the_sample_is_fixed_by_its_seed_and_is_the_validation_transform(dls):
    torch.manual_seed(0)
    learn = vision_learner(dls, simple_cnn, pretrained=False, progress="silent")
    a, b, other = (learn.train_sample(8, seed) for seed in (3, 3, 4))
    assert a.dataset.items == b.dataset.items and len(a.dataset) == 8
    assert a.dataset.items != other.dataset.items  # another seed, other images
    x, y = gathered(a)
    x2, _ = gathered(b)
    torch.testing.assert_close(x, x2, rtol=0, atol=0)
    train_files = set(dls.train_ds.items)
    for path, image, label in zip(a.dataset.items, x, y, strict=True):
        assert path in train_files  # training images, not validation ones
        assert dls.classes[int(label)] == path.parent.name  # the label of its folder
        # exactly the validation transform: no random crop, no flip (augment is on here)
        want = torch.from_numpy(preprocess(path, dls.preprocess_config))
        torch.testing.assert_close(image, want, rtol=0, atol=0)


def test_plain_tensor_loaders_get_the_generic_eval_mode_train_loss():
    """A VisionLearner over DataLoaders.from_tensors has no image files: its unfrozen epochs
    still record train_loss_eval, measured like the Learner's (learner/core.py)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 8, 8, generator=g), torch.arange(40) % 2
    x[y == 1] += 1.0
    data = DataLoaders.from_tensors(x[:30], y[:30], x[30:], y[30:], bs=10)
    data.c = 2
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    learn = vision_learner(data, BodyHead(body, nn.Identity()), progress="silent")
    learn.unfreeze()
    learn.fit(1, 0.01)
    (row,) = learn.recorder.history.epochs
    assert row.train_loss_eval is not None and np.isfinite(row.train_loss_eval)
    # the generic sample: min(256, 30, max(32, 30 // 4)) = all 30 training tensors, eval mode
    learn.model.eval()
    with torch.no_grad():
        want = float(learn.loss_func(learn.model(x[:30]), y[:30]))
    assert row.train_loss_eval == pytest.approx(want, rel=1e-5)

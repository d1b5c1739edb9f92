"""BatchNorm folded into the convs for the no-grad passes (vision/features.py
``fold_batchnorm``): the feature cache, validation and get_preds of a VisionLearner give the
numbers of the unfolded model, and the model itself is left as it was.

Tolerance (float32 eps = 1.19e-7): folding changes only the rounding of each conv -> BN
pair (w * gamma / sqrt(var + eps) is rounded once instead of the product being normalised
after), a few eps relative per layer, and the conv's length-K sums then carry that change
with a random-walk growth of sqrt(K); the errors add over the depth D = 52 conv/BN layers.
With K = 1280 (the largest reduction, the last 1x1 conv) rtol = D sqrt(K) eps ~ 2.2e-4 of
the output's magnitude. Measured at 224 px: 1.4e-6. A wrong fold (a BN left in, a bias
dropped, a scale on the wrong axis) moves outputs by O(1).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_texture_folder
from fastcore_cv.vision.features import fold_batchnorm
from fastcore_cv.vision.models import channels_last, efficientnet_lite0
from fastcore_cv.vision.transfer import vision_learner

pytest.importorskip("skimage")
pytestmark = pytest.mark.usefixtures("one_thread")

EPS = float(torch.finfo(torch.float32).eps)
RTOL = 52 * math.sqrt(1280) * EPS  # D sqrt(K) eps, see the module docstring


@pytest.fixture(scope="module")
def body():
    """The pretrained Lite0 body with BatchNorm statistics moved off their pretrained values
    by two train-mode passes (so the fold must use the running statistics, not identity)."""
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=True, num_classes=3).body
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, 48, 48) * 3)
    return model.eval()


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= RTOL * max(scale, 1.0)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 3),
    size=st.sampled_from([32, 45, 64]),
    nhwc=st.booleans(),
)
def test_folded_body_matches_the_eval_body(body, seed, n, size, nhwc):
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2
    before = {k: v.clone() for k, v in body.state_dict().items()}
    with torch.no_grad():
        want = body(x)
        if nhwc:
            with channels_last(body):
                folded = fold_batchnorm(body)
                assert all(  # the folded weights keep the layout the body runs in
                    m.weight.is_contiguous(memory_format=torch.channels_last)
                    for m in folded.modules()
                    if isinstance(m, torch.nn.Conv2d)
                )
                got = folded(x)
        else:
            got = fold_batchnorm(body)(x)
    _close(got, want)
    folded = fold_batchnorm(body)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())  # untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def test_fold_leaves_a_bn_that_does_not_follow_a_conv():
    """Only a ``conv`` child feeding a ``bn`` child is folded: other orders keep their BN."""
    block = torch.nn.Sequential()
    block.add_module("bn", torch.nn.BatchNorm2d(3))
    block.add_module("conv", torch.nn.Conv2d(3, 4, 3, bias=False))
    with torch.no_grad():
        block.bn.running_mean.fill_(0.5)
    folded = fold_batchnorm(block)
    assert isinstance(folded.bn, torch.nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        _close(folded(x), block.eval()(x))


@pytest.fixture(scope="module")
def texture_dls(tmp_path_factory):
    root = write_texture_folder(tmp_path_factory.mktemp("fold_textures"), size=96, stride=96)
    return ImageDataLoaders.from_folder(root, size=64, bs=8, augment=False, seed=0)


def test_learner_passes_match_with_and_without_folding(texture_dls):
    """Features, validation loss and get_preds: folded (the default) == unfolded."""
    runs = {}
    for fold in (True, False):
        learn = vision_learner(texture_dls, "efficientnet_lite0", seed=0, progress="silent")
        learn.fold_bn = fold
        cache = learn.features()
        learn.unfreeze()
        preds, _ = learn.get_preds()
        runs[fold] = (cache.train_x, cache.valid_x, learn.validate()["valid_loss"], preds)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in learn.model.modules())
    for got, want in zip(runs[True][:2], runs[False][:2], strict=True):
        _close(got, want)
    assert math.isclose(runs[True][2], runs[False][2], rel_tol=RTOL, abs_tol=RTOL)
    _close(runs[True][3], runs[False][3])

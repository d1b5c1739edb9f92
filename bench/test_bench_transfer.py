"""Suite "transfer": EfficientNet-Lite0 on the digits folder (1,797 images, 80/20 split).

Stage 1 (body frozen, 5 head epochs):
- fastcore_cv: the body runs ONCE over train + valid (features cached), then 5 one-cycle
  epochs of the kernel head on the features. The feature pass is inside the timing.
- torch, body every epoch: the same head, but every batch goes through the frozen body
  again (eval mode, no gradient): the cheapest way to recompute. Against it the ratio
  stays below 5x for 5 epochs by arithmetic: 5 body passes over train + valid vs 1.
- fastai freeze: what fastai's frozen epochs do: body weights frozen but its BatchNorm
  layers trainable and in train mode (train_bn=True), so every batch runs forward AND
  backward through the whole body.
End to end: ``vision_learner`` + ``fine_tune`` with the demo's settings (one timed run).
"""

from __future__ import annotations

import pytest
from torch import nn

from fastcore_cv.learner import Learner, error_rate
from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_digits_folder
from fastcore_cv.vision.models import BodyHead, make_head
from fastcore_cv.vision.recipes import DIGITS_RECIPE
from fastcore_cv.vision.transfer import vision_learner

SUITE = "transfer"
HEAD_EPOCHS, HEAD_LR = 5, 0.1
SIZE = DIGITS_RECIPE["data"]["size"]
STAGE1 = f"stage 1: {HEAD_EPOCHS} head epochs, digits {SIZE}px"


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    root = write_digits_folder(tmp_path_factory.mktemp("digits"))
    return ImageDataLoaders.from_folder(root, **DIGITS_RECIPE["data"])


def stage1_cached(dls):
    learn = vision_learner(dls, progress="silent")
    learn.fit_one_cycle(HEAD_EPOCHS, HEAD_LR)
    return learn


def baseline_learner(dls, train_bn: bool) -> Learner:
    learn = vision_learner(dls, progress="silent")  # same pretrained body, same new head
    model = BodyHead(learn.model.body, make_head(learn.model.num_features, dls.c))
    for m in model.body.modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(train_bn and isinstance(m, nn.BatchNorm2d))
    if not train_bn:
        model.body.train = lambda mode=True: model.body  # type: ignore[method-assign]
        model.body.eval()  # stays in eval mode: only the forward pass is recomputed
    return Learner(model, dls, metrics=[error_rate], progress="silent")


@pytest.mark.parametrize("threads", [1, 2])
def test_stage1_cached(measure, dls, threads):
    measure(stage1_cached, dls, suite=SUITE, case=STAGE1, impl="fastcore_cv", threads=threads,
            rounds=1)  # fmt: skip


BASELINES = {"torch, body every epoch": False, "fastai freeze (train_bn)": True}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", list(BASELINES))
def test_stage1_baseline(measure, dls, impl, threads):
    """The body recomputed every epoch: frozen entirely, or with BatchNorm training (fastai)."""

    def run():
        baseline_learner(dls, train_bn=BASELINES[impl]).fit_one_cycle(HEAD_EPOCHS, HEAD_LR)

    measure(run, suite=SUITE, case=STAGE1, impl=impl, threads=threads, rounds=1)


def test_fine_tune_end_to_end(measure, benchmark, tmp_path_factory):
    """Folder -> fine-tuned model as the demo runs it (loaders, features, lr_find, both
    stages); the error rate of each run is stored next to the time."""
    root = write_digits_folder(tmp_path_factory.mktemp("digits_e2e"))
    errors = []

    def run():
        dls = ImageDataLoaders.from_folder(root, **DIGITS_RECIPE["data"])
        learn = vision_learner(dls, progress="silent")
        learn.fine_tune(**DIGITS_RECIPE["fine_tune"])
        errors.append(round(learn.validate()["error_rate"], 4))

    case = f"fine_tune end to end, digits {SIZE}px, {DIGITS_RECIPE['fine_tune']['epochs']} epochs"
    measure(run, suite=SUITE, case=case, impl="fastcore_cv", threads=2, rounds=1)
    benchmark.extra_info["error_rates"] = errors

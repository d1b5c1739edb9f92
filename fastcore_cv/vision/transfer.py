"""Transfer learning, the recipe: ``vision_learner`` (pretrained body, new head, body frozen)
returns a ``VisionLearner`` (vision.transfer_learner) whose ``fine_tune`` (learner.fine_tune)
trains the head on cached body features with the kernels, then unfreezes and trains
everything with discriminative learning rates.

learn = vision_learner(dls, "efficientnet_lite0", metrics=error_rate)
learn.fine_tune(8)          # the head's LR: lr_find on the cached features

or, from a folder, the recipe ``fastcore-cv train`` runs (vision/recipes.py ``Recipe``):

learn = recipe_learner("photos", Recipe(epochs=8))
plan = learn.plan_fine_tune(**Recipe(epochs=8).fine_tune_kwargs())  # which LR goes where
learn.run_plan(plan)        # == train_recipe("photos", Recipe(epochs=8))

Measured choices (digits folder, 32 px, 8 epochs, 359 validation images, so one image is
0.28%; ``examples/digits_transfer.py`` runs the recipe):
- BatchNorm: the model's TF momentum 0.01 leaves the running statistics near ImageNet's
  (64% error, the trap); momentum 0.1 once unfrozen: 0.8% (3 seeds). Re-estimating the
  statistics after training on shuffled clean images gave the same (1.1-1.7%), and keeping
  BatchNorm in eval mode diverged at the same LR; so "momentum" is the default, and every
  validation runs in eval mode: the statistics the exported model will use.
- Head: dropout -> Linear beat fastai's BN/512/BN head (5.6% vs 9.7%, 5 epochs).
- lr_mult 10, not fastai's 100: with SGD the body needs the larger share (100: 4.5%,
  30: 2.5%, 10: 1.7%; 5 epochs). Digits are far from ImageNet, the body must move.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcore_cv import nn as knn
from fastcore_cv.learner import Callback, error_rate
from fastcore_cv.learner.seed import set_seed
from fastcore_cv.vision.data import ImageDataLoaders
from fastcore_cv.vision.models import BodyHead, build_arch, make_head
from fastcore_cv.vision.recipes import Recipe
from fastcore_cv.vision.transfer_learner import VisionLearner


def _num_features(model: nn.Module, dls: Any) -> int:
    n = getattr(model, "num_features", None)
    if isinstance(n, int):
        return n
    x, _ = next(iter(dls.valid if getattr(dls, "valid", None) is not None else dls.train))
    model.body.eval()
    with torch.no_grad():
        out = model.body(x[:2])
    if out.ndim != 2:
        raise ValueError(
            f"arch: the model's body must return (N, features), got shape {tuple(out.shape)}"
        )
    return int(out.shape[1])


def _build(arch: Any, pretrained: bool, c: int) -> nn.Module:
    if isinstance(arch, str):
        return build_arch(arch, pretrained, c)
    if isinstance(arch, nn.Module):
        return arch
    if callable(arch):
        return arch(pretrained=pretrained, num_classes=c)
    raise TypeError(f"arch: expected a name, a model or a constructor, got {type(arch).__name__}")


def vision_learner(
    dls: Any,
    arch: str | nn.Module | Callable[..., nn.Module] = "efficientnet_lite0",
    pretrained: bool = True,
    metrics: Sequence[Callable] | Callable = (error_rate,),
    *,
    head: str = "linear",
    dropout: float = 0.25,
    views: int = 1,
    bn: str = "momentum",
    seed: int | None = 42,
    loss_func: Callable | None = None,
    opt_func: Callable[..., torch.optim.Optimizer] | None = None,
    cbs: Sequence[Callback] = (),
    progress: str = "auto",
    learner_cls: type[VisionLearner] = VisionLearner,
) -> VisionLearner:
    """A Learner with a pretrained body, a new head for ``dls``'s classes, body frozen.

    ``arch``: a name in ``vision.models.ARCHS``, a constructor ``f(pretrained=...,
    num_classes=...)``, or a model following the body/head protocol (``model.body``: images
    -> (N, F); see ``vision.models``). ``views``: passes over the training set in the feature
    cache (1 = plain images; more add augmented views). ``bn``: see ``VisionLearner``.
    ``learner_cls``: a VisionLearner subclass (distributed/ddp.py: one per rank).
    """
    c = getattr(dls, "c", None) or len(getattr(dls, "classes", None) or [])
    if not c:
        raise ValueError("dls: cannot tell the number of classes (expected dls.c or dls.classes)")
    if seed is not None:  # the new head's (and an unpretrained body's) initial weights too
        set_seed(seed)
    model = _build(arch, pretrained, c)
    if not isinstance(getattr(model, "body", None), nn.Module):
        raise TypeError(
            f"arch: {type(model).__name__} has no body/head split; a model for transfer "
            "learning needs `.body` (images -> (N, features)) and `.head`, e.g. "
            "fastcore_cv.vision.models.BodyHead(body, head)"
        )
    if getattr(dls, "valid", None) is None:
        warnings.warn(
            "dls: no validation set; always check models on a validation set (the error "
            "rate and the interpretation need one)",
            stacklevel=2,
        )
    if pretrained:
        _check_stats(model, dls)
    nf = _num_features(model, dls)
    new = BodyHead(model.body, make_head(nf, c, head, dropout), nf)

    def splitter(m: nn.Module) -> list[list[nn.Parameter]]:
        """The arch's body groups (``param_groups()``, else the whole body), then the head."""
        groups = model.param_groups() if callable(getattr(model, "param_groups", None)) else None
        body_groups = groups[:-1] if groups else [list(m.body.parameters())]
        return [*body_groups, list(m.head.parameters())]

    return learner_cls(
        dls, new, views=views, bn=bn, metrics=[metrics] if callable(metrics) else metrics,
        seed=seed, loss_func=loss_func if loss_func is not None else knn.CrossEntropyLoss(),
        opt_func=opt_func, splitter=splitter, cbs=cbs, progress=progress,
    )  # fmt: skip


def _check_stats(model: nn.Module, dls: Any) -> None:
    """Warn when the loaders normalise with other statistics than the pretrained body's."""
    want = (getattr(model, "mean", None), getattr(model, "std", None))
    config = getattr(dls, "preprocess_config", None)
    if None in want or config is None:
        return
    if not (np.allclose(config.mean, want[0]) and np.allclose(config.std, want[1])):
        warnings.warn(
            f"dls: images are normalised with mean {config.mean} / std {config.std}, but "
            f"{type(model).__name__} was trained with {want[0]} / {want[1]}; pass mean= and "
            "std= to ImageDataLoaders.from_folder",
            stacklevel=3,
        )


def recipe_learner(folder: Any, recipe: Recipe | None = None, **kwargs: Any) -> VisionLearner:
    """``vision_learner`` on ``ImageDataLoaders.from_folder(folder)``, both as ``recipe``
    (default ``Recipe()``) says; other keywords go to vision_learner. What ``fastcore-cv
    train`` and ``lr-find`` build."""
    recipe = Recipe() if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe: expected a Recipe, got {type(recipe).__name__}")
    dls = ImageDataLoaders.from_folder(folder, **recipe.data_kwargs())
    return vision_learner(
        dls, recipe.arch, pretrained=recipe.use_pretrained, seed=recipe.seed, **kwargs
    )


def train_recipe(folder: Any, recipe: Recipe | None = None, **kwargs: Any) -> VisionLearner:
    """``recipe_learner``, then ``fine_tune`` as ``recipe`` says (``plan_fine_tune`` +
    ``run_plan``); the plan it followed, which LR went where, is ``learn.fine_tune_plan``."""
    recipe = Recipe() if recipe is None else recipe
    learn = recipe_learner(folder, recipe, **kwargs)
    learn.run_plan(learn.plan_fine_tune(**recipe.fine_tune_kwargs()))
    return learn

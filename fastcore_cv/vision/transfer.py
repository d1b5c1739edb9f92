"""Transfer learning: ``vision_learner`` (pretrained body, new head, body frozen) and
``fine_tune`` (train the head on cached body features with the kernels, then unfreeze and
train everything with discriminative learning rates).

learn = vision_learner(dls, "efficientnet_lite0", metrics=error_rate)
learn.fine_tune(8)          # the head's LR: lr_find on the cached features

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

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcore_cv import nn as knn
from fastcore_cv.checks import check_int
from fastcore_cv.learner import Callback, DataLoaders, Learner, error_rate
from fastcore_cv.learner.lr_find import LRFinderResult
from fastcore_cv.learner.recorder import History, Recorder
from fastcore_cv.learner.seed import set_seed
from fastcore_cv.vision.features import (
    FeatureCache,
    batchnorms,
    compute_features,
    recompute_bn_stats,
    set_bn_momentum,
)
from fastcore_cv.vision.loader import ImageDataset
from fastcore_cv.vision.models import ARCHS, BodyHead

log = logging.getLogger("fastcore_cv.vision")

BN_POLICIES = ("momentum", "frozen", "keep")
HEADS = ("linear", "fastai")
HEAD_STEPS = 100  # default length of the frozen stage, in head steps (see fine_tune)
# Unfrozen stage's default base LR for SGD (momentum 0.9): digits 0.14-0.3 all gave <= 0.8%
# error (0.4: 1.4%, 0.1: 2.2%); textures 0% at 0.1 and 0.2 (96 px).
BASE_LR = 0.2
# The embedded digits data's measured recipe: 1.1% / 1.4% / 1.4% error on split seeds
# 42 / 1 / 2; 56 s on 2 cores (150-160 s while other jobs shared them). 32 px is enough for
# the 8x8 originals (48 px: no better, 2x slower); augmentation hurt at this budget (random
# crops cut strokes: 5.6% vs 1.7% at 5 epochs; milder crops, scale >= 0.8: 3.3%).
DIGITS_RECIPE: dict[str, dict[str, Any]] = {
    "data": dict(size=32, bs=64, augment=False, flip=False),
    "fine_tune": dict(epochs=8, base_lr=None),
}


def head_opt(params: Any, lr: float) -> torch.optim.Optimizer:
    """Stage 1's optimizer: the kernel-backed flat-buffer SGD (momentum 0.9)."""
    try:
        from fastcore_cv.optim import SGD
    except ImportError:  # pragma: no cover - optim.py not present
        SGD = torch.optim.SGD
    return SGD(params, lr=lr, momentum=0.9)


def make_head(num_features: int, num_classes: int, kind: str = "linear", p: float = 0.25):
    """A new head from the kernel-backed layers of ``fastcore_cv.nn``.

    "linear": dropout -> Linear. "fastai": BN -> dropout -> Linear+ReLU(512) -> BN ->
    dropout -> Linear (fastai's create_head, minus the pooling the body already does).
    """
    if kind == "linear":
        return nn.Sequential(nn.Dropout(p), knn.Linear(num_features, num_classes))
    if kind == "fastai":
        return nn.Sequential(
            nn.BatchNorm1d(num_features),
            nn.Dropout(p),
            knn.LinearReLU(num_features, 512),
            nn.BatchNorm1d(512),
            nn.Dropout(2 * p),
            knn.Linear(512, num_classes),
        )
    raise ValueError(f"head: expected one of {list(HEADS)}, got {kind!r}")


class _FrozenBN(Callback):
    """Keep the body's BatchNorm layers in eval mode while training (the "frozen" policy)."""

    def __init__(self, body: nn.Module) -> None:
        self.body, self.handles = body, []

    def before_fit(self, learn: Learner) -> None:
        def keep_eval(module: nn.Module, args: Any) -> None:
            module.training = False

        self.handles = [bn.register_forward_pre_hook(keep_eval) for bn in batchnorms(self.body)]

    def after_fit(self, learn: Learner) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class VisionLearner(Learner):
    """A Learner over a ``BodyHead`` model that knows frozen (head only) from unfrozen.

    While frozen, ``fit``/``fit_one_cycle``/``lr_find``/``validate`` train and score the
    head on body features computed once (``features()``), with the kernel layers and the
    flat-buffer SGD; unfrozen, they run the whole model with torch (``opt_func``) over the
    splitter's parameter groups, for discriminative learning rates.
    ``bn`` (once unfrozen): "momentum" sets BatchNorm momentum 0.1; "frozen" keeps the
    body's BatchNorm in eval mode; "keep" leaves the model as it is.
    """

    def __init__(
        self,
        dls: Any,
        model: BodyHead,
        *,
        views: int = 1,
        bn: str = "momentum",
        head_opt_func: Callable[..., torch.optim.Optimizer] = head_opt,
        **kwargs: Any,
    ) -> None:
        if bn not in BN_POLICIES:
            raise ValueError(f"bn: expected one of {list(BN_POLICIES)}, got {bn!r}")
        check_int(views, "views")
        super().__init__(model, dls, **kwargs)
        self.source_dls = dls  # self.dls is the plain (train, valid) view of it
        self.views, self.bn, self.head_opt_func = views, bn, head_opt_func
        self.frozen = False
        self.feature_cache: FeatureCache | None = None
        self._feature_dls: DataLoaders | None = None
        self._head_opt: torch.optim.Optimizer | None = None
        self.frozen_history: History | None = None
        self.lr_find_results: list[LRFinderResult] = []
        self.freeze()

    # -- freezing --------------------------------------------------------------------
    def freeze(self) -> VisionLearner:
        """Train only the head (on cached features) from now on."""
        for p in self.model.body.parameters():
            p.requires_grad_(False)
        if not self.frozen:
            self.opt = None
        self.frozen = True
        return self

    def unfreeze(self) -> VisionLearner:
        """Train the whole model; the cached features become stale and are dropped."""
        for p in self.model.parameters():
            p.requires_grad_(True)
        if self.frozen:
            self.opt, self._head_opt = None, None
            self.feature_cache, self._feature_dls = None, None
        self.frozen = False
        if self.bn == "momentum":
            set_bn_momentum(self.model.body, 0.1)
        return self

    def features(self) -> FeatureCache:
        """The body's features of the training (``views`` passes) and validation sets."""
        if self.feature_cache is None:
            self.feature_cache = compute_features(self.model.body, self.source_dls, self.views)
            self._feature_dls = None
            log.info("%s", self.feature_cache)
        return self.feature_cache

    def _features_dls(self) -> DataLoaders:
        if self._feature_dls is None:
            balance = bool(getattr(self.source_dls.train, "oversample", False))
            bs = getattr(self.source_dls, "bs", None) or getattr(self.dls.train, "bs", 64)
            self._feature_dls = self.features().dataloaders(bs, self.seed, balance)
        return self._feature_dls

    @contextlib.contextmanager
    def _stage(self) -> Iterator[None]:
        """While frozen: the head is the model and the cached features are the data."""
        if not self.frozen:
            yield
            return
        feature_dls = self._features_dls()
        saved = (self.model, self.dls, self.opt, self.opt_func, self.splitter)
        self.model, self.dls = saved[0].head, feature_dls
        self.opt, self.opt_func, self.splitter = self._head_opt, self.head_opt_func, None
        try:
            yield
        finally:
            self._head_opt = self.opt
            self.model, self.dls, self.opt, self.opt_func, self.splitter = saved

    # -- the Learner's entry points, staged ------------------------------------------
    def fit(self, epochs: int, lr: Any = 1e-3) -> Recorder:
        with self._stage():
            return super().fit(epochs, lr)

    def fit_one_cycle(self, epochs: int, lr_max: Any = 1e-3, **kwargs: Any) -> Recorder:
        with self._stage():
            return super().fit_one_cycle(epochs, lr_max, **kwargs)

    def lr_find(self, *args: Any, **kwargs: Any) -> LRFinderResult:
        with self._stage():
            return super().lr_find(*args, **kwargs)

    def validate(self) -> dict[str, float | None]:
        with self._stage():
            return super().validate()

    def _fit(self, epochs: int, hypers: Any) -> Recorder:
        if self.frozen or self.bn != "frozen":
            return super()._fit(epochs, hypers)
        cb = _FrozenBN(self.model.body)
        self.add_cb(cb)
        try:
            return super()._fit(epochs, hypers)
        finally:
            self.remove_cb(cb)

    # -- fine_tune -------------------------------------------------------------------
    def suggest_lr(self, sweeps: int = 5) -> float:
        """The median suggestion of ``sweeps`` seeded ``lr_find`` runs on the cached features.

        One sweep's suggestion varied 3.7x between seeds on the digits features (0.095 to
        0.35); the median of 5 varied 2x (0.14 to 0.29). With the body frozen a sweep costs
        well under a second, so the steadier answer is nearly free.
        """
        self.freeze()
        self.lr_find_results = [self.lr_find(seed=s) for s in range(sweeps)]
        return float(np.median([r.suggestion for r in self.lr_find_results]))

    def fine_tune(
        self,
        epochs: int,
        base_lr: float | None = None,
        freeze_epochs: int | None = None,
        lr_mult: float = 10.0,
        pct_start: float = 0.3,
        div: float = 5.0,
        head_lr: float | None = None,
    ) -> Recorder:
        """fastai's recipe: ``freeze_epochs`` one-cycle epochs on the head (pct_start 0.99)
        at ``head_lr``, then unfreeze, halve ``base_lr`` and run ``epochs`` one-cycle epochs
        with LRs from ``base_lr/lr_mult`` (first body group) to ``base_lr`` (head).

        ``head_lr=None``: ``base_lr`` when given, else ``suggest_lr()`` (lr_find on the
        cached features). ``base_lr=None``: ``BASE_LR``. With SGD the head's LR says nothing
        about the body's: it scales with the size of the features (lr_find: 0.14-0.29 on
        digits, 1e-4 on textures, where the loss falls at any LR), while the body, all
        BatchNorm-ed, wants ~0.01 (textures with 1e-4: 18-22% error as the BatchNorm
        statistics drift under an unchanged head; with 1.0: diverged; 0.2: 0%).
        ``freeze_epochs=None``: enough epochs for ``HEAD_STEPS`` head steps (fastai's one
        frozen epoch is 2 steps on the 108 texture images: 60% error; 100 steps: 0%; on
        cached features they cost milliseconds). The frozen stage's history is kept in
        ``frozen_history``; ``recorder`` has the unfrozen one.
        """
        check_int(epochs, "epochs")
        self.freeze()
        if freeze_epochs is None:
            per_epoch = max(1, len(self._features_dls().train))
            freeze_epochs = -(-HEAD_STEPS // per_epoch)
        check_int(freeze_epochs, "freeze_epochs")
        if head_lr is None:
            head_lr = base_lr if base_lr is not None else self.suggest_lr()
            log.info("fine_tune: head_lr %.3g", head_lr)
        self.fit_one_cycle(freeze_epochs, head_lr, pct_start=0.99)
        self.frozen_history = self.recorder.history
        base_lr = (BASE_LR if base_lr is None else base_lr) / 2
        self.unfreeze()
        return self.fit_one_cycle(
            epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div
        )

    def recompute_bn(self) -> int:
        """Re-estimate the BatchNorm statistics on shuffled, non-augmented training images
        (class-sorted batches would give each batch one class's statistics)."""
        dls = self.source_dls
        if not hasattr(dls, "test_dl"):
            return recompute_bn_stats(self.model, self.dls.train)
        ds = dls.train_ds
        order = np.random.default_rng(self.seed).permutation(len(ds))
        shuffled = ImageDataset([ds.items[i] for i in order], ds.labels[order], ds.classes)
        return recompute_bn_stats(self.model, dls.test_dl(shuffled))


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
        if arch not in ARCHS:
            raise ValueError(f"arch: unknown architecture {arch!r}; known: {sorted(ARCHS)}")
        return ARCHS[arch](pretrained=pretrained, num_classes=c)
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
) -> VisionLearner:
    """A Learner with a pretrained body, a new head for ``dls``'s classes, body frozen.

    ``arch``: a name in ``ARCHS``, a constructor ``f(pretrained=..., num_classes=...)``, or
    a model following the body/head protocol (``model.body``: images -> (N, F); see
    ``vision.models``). ``views``: passes over the training set in the feature cache (1 =
    plain images; more add augmented views). ``bn``: see ``VisionLearner``.
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

    return VisionLearner(
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

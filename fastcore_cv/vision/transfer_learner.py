"""``VisionLearner``: a body/head Learner whose frozen stage trains the head on body features
computed once, with the kernel layers and the flat-buffer SGD.

The frozen stage is a Learner of its own (``head_learner()``: the head, the cached features,
``head_opt_func``), sharing this learner's loss, metrics, callbacks and recorder. Nothing on
the VisionLearner is swapped while it runs: ``learn.model`` is always the whole model, and a
callback is handed the head's Learner (model = the head) during the frozen stage.
The recipe (``vision_learner``, the measured choices) is in ``vision.transfer``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from fastcore_cv.checks import check_bool, check_int
from fastcore_cv.learner.core import Hypers, Learner
from fastcore_cv.learner.fine_tune import BodyHeadLearner, split_index
from fastcore_cv.learner.lr_finder import LRFinderResult
from fastcore_cv.learner.recorder import Recorder
from fastcore_cv.optim import SGD
from fastcore_cv.vision.features import (
    FeatureCache,
    compute_features,
    fold_batchnorm,
    set_bn_momentum,
)
from fastcore_cv.vision.models import BodyHead, channels_last
from fastcore_cv.vision.partial import (
    MAX_CACHE_BYTES,
    PartialStage,
    build_stage,
    check_augmentation,
)

log = logging.getLogger("fastcore_cv.vision")

BN_POLICIES = ("momentum", "frozen", "keep")


def head_opt(params: Any, lr: float) -> torch.optim.Optimizer:
    """Stage 1's optimizer: the kernel-backed flat-buffer SGD (momentum 0.9)."""
    return SGD(params, lr=lr, momentum=0.9)


class VisionLearner(BodyHeadLearner):
    """A Learner over a ``BodyHead`` model that knows frozen (head only) from unfrozen.

    While frozen, ``fit``/``fit_one_cycle``/``lr_find``/``validate`` run on
    ``head_learner()``: the head on body features computed once (``features()``), with the
    kernel layers and the flat-buffer SGD; unfrozen, they run the whole model with torch
    (``opt_func``) over the splitter's parameter groups, for discriminative learning rates.
    ``bn`` (once unfrozen): "momentum" sets BatchNorm momentum 0.1; "frozen" keeps the
    body's BatchNorm in eval mode; "keep" leaves the model as it is.
    ``channels_last``: the feature cache, and each fit and lr_find of the whole model, run
    with the model and its batches in torch.channels_last (``vision.models.channels_last``:
    ~2x faster at 224 px, the same numbers to float32 rounding); outside them the model is
    contiguous as built. ``fold_bn``: the no-grad passes (feature cache, validation,
    get_preds) run a copy with each BatchNorm folded into its conv (``fold_batchnorm``).
    """

    def __init__(
        self,
        dls: Any,
        model: BodyHead,
        *,
        views: int = 1,
        bn: str = "momentum",
        head_opt_func: Callable[..., torch.optim.Optimizer] = head_opt,
        channels_last: bool = True,
        fold_bn: bool = True,
        **kwargs: Any,
    ) -> None:
        if bn not in BN_POLICIES:
            raise ValueError(f"bn: expected one of {list(BN_POLICIES)}, got {bn!r}")
        check_int(views, "views")
        self.source_dls = dls  # self.dls is the plain (train, valid) view of it
        self.views, self.bn, self.head_opt_func = views, bn, head_opt_func
        self.channels_last, self.fold_bn = bool(channels_last), bool(fold_bn)
        self.feature_cache: FeatureCache | None = None
        self._head_learner: Learner | None = None
        self.partial: PartialStage | None = None  # freeze_to's stage (vision/partial.py)
        super().__init__(model, dls, **kwargs)

    # -- freezing --------------------------------------------------------------------
    def freeze(self) -> VisionLearner:
        """Train only the head (on cached body features); a freeze_to stage is dropped."""
        self.partial = None
        super().freeze()
        return self

    def freeze_to(
        self, n: int, *, per_epoch: bool | None = False, max_cache_bytes: int = MAX_CACHE_BYTES
    ) -> VisionLearner:
        """Train body[n:] + head only (n < 0 counts from the end; 0 is ``unfreeze()``,
        len(body) is ``freeze()``), on body[:n]'s eval-mode activations cached once
        (vision/partial.py). ``per_epoch``: for augmented images, the frozen blocks run on
        each epoch's batches (None: when the loaders augment, as ``run_plan`` asks);
        ``max_cache_bytes`` bounds the cache (refused past it)."""
        if per_epoch is None:
            per_epoch = getattr(self.source_dls, "train_transform", None) is not None
        check_bool(per_epoch, "per_epoch")
        check_int(max_cache_bytes, "max_cache_bytes")
        k = split_index(self.model.body, n)
        if k == 0:
            return self.unfreeze()
        if k == len(self.model.body):
            return self.freeze()
        check_augmentation(self.source_dls, per_epoch)
        stage = self.partial
        if stage is None or (stage.n, stage.per_epoch) != (k, per_epoch):
            stage = build_stage(self, k, per_epoch, max_cache_bytes)
            # body[k:] will train: the body features go stale
            self.feature_cache, self._head_learner = None, None
            self.frozen, self.opt, self.partial = False, None, stage
            log.info("%s", stage.cache)
        return self

    def partial_learner(self) -> Learner:
        """freeze_to's stage Learner (the body's rest + head on the cached activations),
        with this learner's current loss, metrics, callbacks and recorder."""
        if self.partial is None:
            raise ValueError("freeze_to: no partial stage; call learn.freeze_to(n) first")
        sub = self.partial.learner
        sub.loss_func, sub.metrics, sub.cbs = self.loss_func, self.metrics, self.cbs
        sub.recorder = self.recorder
        return sub

    def _stage(self) -> Learner | None:
        """The Learner a fit runs on: the head's (frozen), freeze_to's, or None (whole)."""
        if self.frozen:
            return self.head_learner()
        return None if self.partial is None else self.partial_learner()

    def unfreeze(self) -> VisionLearner:
        """Train the whole model; the cached features become stale and are dropped."""
        self.partial = None
        if self.frozen:
            self.feature_cache, self._head_learner = None, None
        super().unfreeze()
        if self.bn == "momentum":
            set_bn_momentum(self.model.body, 0.1)
        return self

    def body_bn_in_eval(self) -> bool:
        """Frozen, or unfrozen under the "frozen" policy: each fit of the whole model then
        keeps the body's BatchNorm in eval mode (for that fit only: no callback is added)."""
        return self.frozen or self.bn == "frozen"

    def features(self) -> FeatureCache:
        """The body's features of the training (``views`` passes) and validation sets."""
        if self.feature_cache is None:
            body = self.model.body  # eval forward channels_last: 1.3-1.4x (finetune_speed.py)
            with channels_last(body) if self.channels_last else contextlib.nullcontext():
                self.feature_cache = compute_features(
                    body, self.source_dls, self.views, self.fold_bn
                )
            if self._head_learner is not None:  # new data, the same head and optimizer
                self._head_learner.dls = self._feature_dls()
            log.info("%s", self.feature_cache)
        return self.feature_cache

    def _feature_dls(self) -> Any:
        """Loaders over the cached features, batched and balanced as the source loaders."""
        balance = bool(getattr(self.source_dls.train, "oversample", False))
        bs = getattr(self.source_dls, "bs", None) or getattr(self.dls.train, "bs", 64)
        return self.features().dataloaders(bs, self.seed, balance)

    def head_learner(self) -> Learner:
        """The frozen stage's Learner: the head on the cached features, with this learner's
        current loss, metrics, callbacks and recorder. A rebuilt cache (``feature_cache =
        None``) gives it new data but keeps its optimizer (and momentum)."""
        if self._head_learner is None:
            self._head_learner = Learner(self.model.head, self._feature_dls(), progress="silent")
        self.features()  # a dropped cache is rebuilt here: new data, the same head optimizer
        head = self._head_learner
        head.loss_func, head.metrics, head.cbs = self.loss_func, self.metrics, self.cbs
        head.opt_func, head.recorder = self.head_opt_func, self.recorder
        return head

    def head_batches(self) -> int:
        return len(self.head_learner().dls.train)

    def _whole_model_layout(self) -> contextlib.AbstractContextManager:
        """The memory layout the whole model trains in (see ``channels_last``)."""
        return channels_last(self.model) if self.channels_last else contextlib.nullcontext()

    def _fit(self, epochs: int, hypers: Hypers) -> Recorder:
        with self._whole_model_layout():
            return super()._fit(epochs, hypers)

    # -- the Learner's entry points: the head's Learner while frozen ------------------
    def fit(self, epochs: int, lr: Any = 1e-3) -> Recorder:
        if (stage := self._stage()) is not None:
            return stage.fit(epochs, lr)
        return super().fit(epochs, lr)

    def fit_one_cycle(self, epochs: int, lr_max: Any = 1e-3, **kwargs: Any) -> Recorder:
        if (stage := self._stage()) is not None:
            return stage.fit_one_cycle(epochs, lr_max, **kwargs)
        return super().fit_one_cycle(epochs, lr_max, **kwargs)

    def lr_find(self, *args: Any, **kwargs: Any) -> LRFinderResult:
        if (stage := self._stage()) is not None:
            return stage.lr_find(*args, **kwargs)
        with self._whole_model_layout():
            return super().lr_find(*args, **kwargs)

    def validate(self) -> dict[str, float | None]:
        if (stage := self._stage()) is not None:
            return stage.validate()
        with self._whole_model_layout():
            return super().validate()

    def get_preds(self, ds: str = "valid", act: Any = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        with self._whole_model_layout():
            return super().get_preds(ds, act)

    def eval_model(self) -> torch.nn.Module:
        """The model with its BatchNorm folded into the convs (``fold_batchnorm``: the same
        outputs, fewer ops), in the layout it trains in: validation passes ~1.3x faster."""
        return fold_batchnorm(self.model) if self.fold_bn else self.model

    def train_sample(self, items: int, seed: int) -> Any:
        """The eval-mode training loss's sample (learner/core.py) while unfrozen: ``items``
        training images drawn with ``seed``, through the validation transform (no
        augmentation), as the validation loss is measured. (Frozen, the head's Learner
        samples the cached features.) Loaders without image datasets (plain tensor
        ``DataLoaders``) take the Learner's generic path."""
        import numpy as np

        from fastcore_cv.vision.loader import ImageDataset

        ds = getattr(self.source_dls, "train_ds", None)
        test_dl = getattr(self.source_dls, "test_dl", None)
        if not isinstance(ds, ImageDataset) or not callable(test_dl):
            return super().train_sample(items, seed)
        if len(ds) == 0:
            return None
        size = self.train_sample_size(len(ds), items)
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size, replace=False))
        labels = [int(ds.labels[i]) for i in idx]
        return test_dl(ImageDataset([ds.items[i] for i in idx], labels, ds.classes))

"""fastai's ``fine_tune`` for any Learner whose model has a body/head split.

``BodyHeadLearner`` freezes the body (``requires_grad``, and its BatchNorm in eval mode
during a frozen fit), finds the head's LR with ``lr_finder.median_of_sweeps``, trains the
head, then unfreezes and trains everything with discriminative LRs (parameter groups
[body, head] unless a ``splitter`` says otherwise). ``vision.transfer_learner.VisionLearner``
is one: it trains its frozen stage on cached body features. The model must have ``.body``
and ``.head`` modules with ``model(x) == model.head(model.body(x))`` (``vision.models.BodyHead``
is such a model).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from torch import nn

from fastcore_cv.checks import check_int
from fastcore_cv.learner.core import Hypers, Learner
from fastcore_cv.learner.data import num_batches
from fastcore_cv.learner.lr_finder import SWEEPS, LRFinderResult, median_of_sweeps
from fastcore_cv.learner.recorder import History, Recorder

log = logging.getLogger("fastcore_cv.learner")

HEAD_STEPS = 100  # default length of the frozen stage, in head steps (see fine_tune)
# Unfrozen stage's default base LR for SGD (momentum 0.9): digits 0.14-0.3 all gave <= 0.8%
# error (0.4: 1.4%, 0.1: 2.2%); textures 0% at 0.1 and 0.2 (96 px).
BASE_LR = 0.2


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _keep_eval(module: nn.Module, args: Any) -> None:
    module.training = False


@contextlib.contextmanager
def batchnorm_in_eval(model: nn.Module) -> Iterator[None]:
    """Inside the block ``model``'s BatchNorm layers run in eval mode whatever ``train()``
    says: they normalise with their running statistics and never update them."""
    handles = [bn.register_forward_pre_hook(_keep_eval) for bn in batchnorms(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def body_head_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """The default parameter groups of a body/head model: [body, head], so that
    ``fine_tune``'s ``lr_mult`` gives the body a smaller LR than the head."""
    return [list(model.body.parameters()), list(model.head.parameters())]


class BodyHeadLearner(Learner):
    """A Learner over a body/head model that knows frozen (head only) from unfrozen.

    It starts frozen. While frozen the body's parameters do not train and its BatchNorm
    layers run in eval mode (their running statistics stay as they are, as the weights do).
    ``splitter`` defaults to ``body_head_split``. ``frozen_history`` keeps the last
    ``fine_tune``'s frozen stage and ``lr_find_results`` the sweeps of the last ``suggest_lr``.
    """

    def __init__(self, model: nn.Module, dls: Any, **kwargs: Any) -> None:
        for part in ("body", "head"):
            if not isinstance(getattr(model, part, None), nn.Module):
                raise TypeError(
                    f"model: {type(model).__name__} has no `.{part}` module; fine_tune needs "
                    "a body/head split, e.g. fastcore_cv.vision.models.BodyHead(body, head)"
                )
        if kwargs.get("splitter") is None:
            kwargs["splitter"] = body_head_split
        super().__init__(model, dls, **kwargs)
        self.frozen = False
        self.frozen_history: History | None = None
        self.lr_find_results: list[LRFinderResult] = []
        self.freeze()

    def freeze(self) -> BodyHeadLearner:
        """Train only the head from now on (the optimizer is rebuilt at the next fit)."""
        for p in self.model.body.parameters():
            p.requires_grad_(False)
        if not self.frozen:
            self.opt = None
        self.frozen = True
        return self

    def unfreeze(self) -> BodyHeadLearner:
        """Train the whole model from now on."""
        for p in self.model.parameters():
            p.requires_grad_(True)
        if self.frozen:
            self.opt = None
        self.frozen = False
        return self

    def body_bn_in_eval(self) -> bool:
        """Whether a fit now keeps the body's BatchNorm in eval mode: while frozen."""
        return self.frozen

    def _fit(self, epochs: int, hypers: Hypers) -> Recorder:
        if not self.body_bn_in_eval():
            return super()._fit(epochs, hypers)
        with batchnorm_in_eval(self.model.body):
            return super()._fit(epochs, hypers)

    def head_batches(self) -> int:
        """Training batches per epoch of the frozen stage."""
        return num_batches(self.dls.train, "dls.train")

    def suggest_lr(self, sweeps: int = SWEEPS) -> float:
        """Freeze, then the median suggestion of ``sweeps`` seeded ``lr_find`` runs
        (``lr_finder.median_of_sweeps``); the runs are kept in ``lr_find_results``."""
        self.freeze()
        lr, self.lr_find_results = median_of_sweeps(self, sweeps)
        return lr

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
        frozen stage). ``base_lr=None``: ``BASE_LR``. With SGD the head's LR says nothing
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
            freeze_epochs = -(-HEAD_STEPS // max(1, self.head_batches()))
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

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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastcore_cv.checks import check_int, check_number
from fastcore_cv.learner.core import Hypers, Learner
from fastcore_cv.learner.data import num_batches
from fastcore_cv.learner.lr_finder import SWEEPS, LRFinderResult, median_of_sweeps
from fastcore_cv.learner.recorder import History, Recorder

log = logging.getLogger("fastcore_cv.learner")

HEAD_STEPS = 100  # default length of the frozen stage, in head steps (see fine_tune)
# Unfrozen stage's default base LR for SGD (momentum 0.9): digits 0.14-0.3 all gave <= 0.8%
# error (0.4: 1.4%, 0.1: 2.2%); textures 0% at 0.1 and 0.2 (96 px).
BASE_LR = 0.2
# The unfrozen stage's one-cycle: the first body group gets 1/LR_MULT of the head's LR
# (vision/transfer.py: 10 beat fastai's 100 with SGD), warm-up share and starting divisor.
LR_MULT, PCT_START, DIV = 10.0, 0.3, 5.0


@dataclass(frozen=True)
class FineTunePlan:
    """What ``fine_tune`` will do, in numbers, and where each came from (``str()`` says it
    in words: the command line prints it before training)."""

    epochs: int  # unfrozen epochs
    freeze_epochs: int
    head_batches: int  # per frozen epoch
    freeze_epochs_from_steps: bool  # True: freeze_epochs was chosen to give HEAD_STEPS
    head_lr: float
    head_lr_source: str  # "given", or "median of N seeded lr_find sweeps"
    sweep_suggestions: tuple[float, ...]  # each sweep's suggestion (empty when given)
    base_lr: float  # the unfrozen stage's head LR: the base LR, halved
    base_lr_source: str  # "given" or "BASE_LR"
    lr_mult: float
    pct_start: float = PCT_START
    div: float = DIV
    freeze_to: int | None = None  # second stage: freeze_to(n) instead of unfreeze()

    @property
    def head_steps(self) -> int:
        """Steps the head trains for in the frozen stage."""
        return self.freeze_epochs * self.head_batches

    @property
    def body_lrs(self) -> tuple[float, float]:
        """(first body group's LR, head's LR) of the unfrozen stage: ``slice(*body_lrs)``."""
        return (self.base_lr / self.lr_mult, self.base_lr)

    def __str__(self) -> str:
        found = ", ".join(f"{s:.3g}" for s in self.sweep_suggestions)
        why = f"{self.head_lr_source}: {found}" if found else self.head_lr_source
        rule = f" (enough for HEAD_STEPS={HEAD_STEPS})" if self.freeze_epochs_from_steps else ""
        if self.head_steps < HEAD_STEPS:  # fine_tune's docstring: 2 steps gave 60% error
            rule = f" (fewer than HEAD_STEPS={HEAD_STEPS}: the head may be undertrained)"
        lo, hi = self.body_lrs
        n = self.freeze_to
        part = "" if n is None else f" (freeze_to({n}): body[:{n}] stays frozen)"
        base = "given" if self.base_lr_source == "given" else f"BASE_LR={BASE_LR:g}"
        return (
            f"head LR {self.head_lr:.3g} ({why})\n"
            f"frozen stage: {self.freeze_epochs} epoch(s) x {self.head_batches} batch(es) = "
            f"{self.head_steps} head steps{rule}, one-cycle at the head LR\n"
            f"unfrozen stage{part}: {self.epochs} epoch(s), LRs slice({lo:.3g}, {hi:.3g}): body "
            f"groups from {lo:.3g} up to {hi:.3g} for the head (base LR {2 * hi:.3g} ({base}) "
            f"halved; lr_mult {self.lr_mult:g})"
        )


def sgd_momentum(params: Any, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``BASE_LR`` and ``LR_MULT`` were measured with: torch's SGD, momentum
    0.9 (``BodyHeadLearner``'s default ``opt_func``, whatever ``Learner``'s default is: AdamW
    at the SGD-sized BASE_LR would wreck a pretrained body)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _check_positive(value: float | None, name: str) -> None:
    """None (the rule decides) or a finite number > 0, else an error naming ``name``."""
    if value is not None and check_number(value, name, low=0) == 0:
        raise ValueError(f"{name}: must be > 0, got {value}")


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


def split_index(body: nn.Module, n: int) -> int:
    """``n`` as an index into ``body`` (a negative one counts from the end, as fastai's
    ``freeze_to``), or an error naming ``n`` when it is out of range."""
    if not isinstance(body, nn.Sequential):
        raise TypeError(
            f"n: freeze_to splits the body into blocks, so model.body must be an "
            f"nn.Sequential; got {type(body).__name__}"
        )
    size = len(body)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int (a block index of model.body), got {n!r}")
    if not -size <= n <= size:
        raise ValueError(
            f"n: expected an int in [-{size}, {size}] (model.body has {size} blocks), got {n}"
        )
    return int(n) % size if n < 0 else int(n)


class BodyHeadLearner(Learner):
    """A Learner over a body/head model that knows frozen (head only) from unfrozen.

    It starts frozen. While frozen the body's parameters do not train and its BatchNorm
    layers run in eval mode (their running statistics stay as they are, as the weights do).
    ``splitter`` defaults to ``body_head_split``, ``opt_func`` to ``sgd_momentum``.
    ``frozen_history`` keeps the last ``fine_tune``'s frozen stage, ``fine_tune_plan`` its
    plan (which LR went where) and ``lr_find_results`` the sweeps of the last
    ``suggest_lr``.
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
        if kwargs.get("opt_func") is None:
            kwargs["opt_func"] = sgd_momentum
        super().__init__(model, dls, **kwargs)
        self.frozen = False
        self.frozen_history: History | None = None
        self.lr_find_results: list[LRFinderResult] = []
        self.fine_tune_plan: FineTunePlan | None = None
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

    def plan_fine_tune(
        self,
        epochs: int,
        base_lr: float | None = None,
        freeze_epochs: int | None = None,
        lr_mult: float = LR_MULT,
        pct_start: float = PCT_START,
        div: float = DIV,
        head_lr: float | None = None,
        sweeps: int = SWEEPS,
        freeze_to: int | None = None,
    ) -> FineTunePlan:
        """Resolve ``fine_tune``'s rules into numbers, without training: the head's LR and
        where it came from (``head_lr`` given, else ``suggest_lr(sweeps)``), the frozen
        epochs and the head steps they give, and the unfrozen stage's LRs. ``freeze_to``:
        the second stage trains body[freeze_to:] + head only (``freeze_to(n)``)."""
        check_int(epochs, "epochs")
        if freeze_to is not None and not callable(getattr(self, "freeze_to", None)):
            raise TypeError(f"freeze_to: {type(self).__name__} has no freeze_to(n)")
        if freeze_to is not None:  # before any training: an out-of-range n fails now
            split_index(self.model.body, freeze_to)
        check_number(pct_start, "pct_start", low=0, high=1)
        for name, value in (("lr_mult", lr_mult), ("div", div), ("head_lr", head_lr),
                            ("base_lr", base_lr)):  # fmt: skip
            _check_positive(value, name)
        self.freeze()
        batches = max(1, self.head_batches())
        if freeze_epochs is None:
            freeze_epochs, steps_rule = -(-HEAD_STEPS // batches), True
        else:
            steps_rule = False
        check_int(freeze_epochs, "freeze_epochs")
        found: tuple[float, ...] = ()
        if head_lr is None:
            head_lr, source = self.suggest_lr(sweeps), f"median of {sweeps} seeded lr_find sweeps"
            found = tuple(r.suggestion for r in self.lr_find_results)
            log.info("fine_tune: head_lr %.3g", head_lr)
        else:
            source = "given"
        body_given = base_lr is not None
        base = float(BASE_LR if base_lr is None else base_lr)
        return FineTunePlan(
            epochs, freeze_epochs, batches, steps_rule, float(head_lr), source, found,
            base / 2, "given" if body_given else "BASE_LR", float(lr_mult), pct_start, div,
            freeze_to,
        )  # fmt: skip

    def run_plan(self, plan: FineTunePlan) -> Recorder:
        """Train as ``plan`` says: the frozen stage (kept in ``frozen_history``), then the
        unfrozen one (``recorder``); the plan is kept in ``fine_tune_plan``."""
        self.fine_tune_plan = plan
        self.freeze()
        self.fit_one_cycle(plan.freeze_epochs, plan.head_lr, pct_start=0.99)
        self.frozen_history = self.recorder.history
        if plan.freeze_to is None:
            self.unfreeze()
        else:  # VisionLearner.freeze_to: body[:n] stays frozen, its activations cached
            self.freeze_to(plan.freeze_to, per_epoch=None)
        return self.fit_one_cycle(
            plan.epochs, slice(*plan.body_lrs), pct_start=plan.pct_start, div=plan.div
        )

    def fine_tune(
        self,
        epochs: int,
        base_lr: float | None = None,
        freeze_epochs: int | None = None,
        lr_mult: float = LR_MULT,
        pct_start: float = PCT_START,
        div: float = DIV,
        head_lr: float | None = None,
    ) -> Recorder:
        """fastai's recipe: ``freeze_epochs`` one-cycle epochs on the head (pct_start 0.99)
        at ``head_lr``, then unfreeze, halve ``base_lr`` and run ``epochs`` one-cycle epochs
        with LRs from ``base_lr/lr_mult`` (first body group) to ``base_lr`` (head).
        ``plan_fine_tune`` resolves the rules below (``run_plan`` trains); ``fastcore-cv
        train`` calls the same two, so the command line and this method agree.

        ``head_lr=None``: ``suggest_lr()`` (the median of seeded lr_find sweeps on the frozen
        stage), whether or not ``base_lr`` is given. ``base_lr=None``: ``BASE_LR``. With SGD
        the head's LR says nothing about the body's, so neither sets the other: the head's
        scales with the size of the features (lr_find: 0.14-0.29 on digits, 1e-4 on
        textures, where the loss falls at any LR), while the body, all BatchNorm-ed, wants
        ~0.01 (textures with the head's 1e-4 as base_lr: 18-22% error as the BatchNorm
        statistics drift under an unchanged head; with 1.0: diverged; 0.2: 0%).
        ``freeze_epochs=None``: enough epochs for ``HEAD_STEPS`` head steps (fastai's one
        frozen epoch is 2 steps on the 108 texture images: 60% error; 100 steps: 0%; on
        cached features they cost milliseconds). The frozen stage's history is kept in
        ``frozen_history``; ``recorder`` has the unfrozen one.
        """
        plan = self.plan_fine_tune(
            epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, head_lr=head_lr
        )
        return self.run_plan(plan)

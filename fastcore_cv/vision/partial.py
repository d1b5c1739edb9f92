"""Partial fine-tuning, ``freeze_to(n)``: body[:n] frozen, body[n:] + head trained.

The frozen blocks' output is the same every epoch when the images are (no augmentation), so
it is computed once per image, in eval mode, and the trainable rest trains on it: the head
stage's idea (vision/features.py) one split earlier. A step then pays neither the frozen
blocks' forward nor their backward. With augmentation (``per_epoch=True``) each epoch's
images go through the frozen blocks once, batch by batch under no_grad (nothing is kept
beyond the batch), and only the validation activations are cached. Either cache is refused
past ``max_cache_bytes``. The trainable modules are the model's own objects, so what trains
here is what ``learn.model`` exports.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcore_cv.learner.core import Learner
from fastcore_cv.learner.data import TensorLoader, check_batch, num_batches
from fastcore_cv.learner.fine_tune import batchnorm_in_eval
from fastcore_cv.learner.recorder import Recorder
from fastcore_cv.learner.schedule import group_lrs
from fastcore_cv.vision.features import FeatureCache, fold_batchnorm, set_bn_momentum
from fastcore_cv.vision.models import channels_last

MAX_CACHE_BYTES = 2**30  # default bound on the cached activations (train + valid), 1 GiB


class PartialModel(nn.Module):
    """``head(rest(x))`` over the frozen blocks' activations ``x``: ``rest`` holds the body's
    own blocks n, n+1, ... (the same module objects), ``head`` is the model's head."""

    def __init__(self, body: nn.Sequential, n: int, head: nn.Module) -> None:
        super().__init__()
        self.rest, self.head = nn.Sequential(*list(body)[n:]), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rest(x))


def check_augmentation(dls: Any, per_epoch: bool) -> None:
    """Refuse one cache of augmented training images: it would freeze a single view."""
    if not per_epoch and getattr(dls, "train_transform", None) is not None:
        raise ValueError(
            "per_epoch: the training images are augmented (the loaders were built with "
            "augment on), so activations cached once would train on one fixed view; pass "
            "per_epoch=True (each epoch's augmented images go through the frozen blocks "
            "once, batch by batch) or build the loaders with augment=False"
        )


def cache_bytes_error(needed: int, max_bytes: int, what: str) -> ValueError:
    return ValueError(
        f"max_cache_bytes: the {what} need {needed / 2**20:.0f} MiB, more than "
        f"max_cache_bytes={max_bytes} ({max_bytes / 2**20:.0f} MiB); raise max_cache_bytes, "
        "freeze more blocks (a larger n: later activations are smaller), or use smaller images"
    )


def _items(loader: Any) -> int:
    """Images ``loader`` yields per pass: its dataset's length, else batches x batch size."""
    ds = getattr(loader, "dataset", None)
    if ds is not None:
        return len(ds)
    return num_batches(loader, "dls") * int(getattr(loader, "bs", 1))


@torch.no_grad()
def run_frozen(
    frozen: nn.Module, loader: Any, name: str, budget: list[int], max_bytes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations, targets) of ``frozen`` over every batch of ``loader``, written into one
    preallocated tensor. ``budget``: bytes already cached (updated); the bound is checked
    after the first batch, before anything more is computed."""
    out_x: torch.Tensor | None = None
    targs, row = [], 0
    for i, batch in enumerate(loader):
        x, y = check_batch(batch, f"batch {i} of the {name} data")
        out = frozen(x).float()
        if out_x is None:
            total = _items(loader)
            per_image = out[0].numel() * out.element_size()
            if budget[0] + total * per_image > max_bytes:
                needed = budget[0] + total * per_image
                raise cache_bytes_error(needed, max_bytes, f"cached activations of {name}")
            fmt = torch.channels_last if out.ndim == 4 and _is_cl(out) else None
            out_x = torch.empty((max(total, len(out)), *out.shape[1:]), dtype=out.dtype)
            if fmt is not None:
                out_x = out_x.contiguous(memory_format=fmt)
            budget[0] += out_x.numel() * out_x.element_size()
        if row + len(out) > len(out_x):  # a loader longer than it said: grow
            out_x = torch.cat([out_x[:row], out])
        else:
            out_x[row : row + len(out)] = out
        targs.append(torch.as_tensor(y))
        row += len(out)
    if out_x is None:
        raise ValueError(f"dls: the {name} data has no batches (empty dataset?)")
    return out_x[:row], torch.cat(targs)


def _is_cl(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


@dataclass
class ActivationCache(FeatureCache):
    """The frozen blocks' outputs (``train_x`` is None when ``per_epoch``) and their size."""

    n: int = 0
    nbytes: int = 0

    def __repr__(self) -> str:
        shape = None if self.train_x is None else tuple(self.train_x.shape)
        return (
            f"ActivationCache(body[:{self.n}]: train {shape}, valid "
            f"{0 if self.valid_x is None else len(self.valid_x)}, {self.nbytes / 2**20:.1f} "
            f"MiB, computed in {self.seconds:.1f} s)"
        )


def cache_activations(
    frozen: nn.Module, dls: Any, n: int, per_epoch: bool, max_bytes: int
) -> ActivationCache:
    """Run the frozen blocks (eval mode) once over the plain training images (unless
    ``per_epoch``) and the validation set; refuse past ``max_bytes``."""
    start, budget = time.perf_counter(), [0]
    was_training = frozen.training
    frozen.eval()
    try:
        train = (None, None)
        if not per_epoch:
            plain = dls.test_dl(dls.train_ds) if hasattr(dls, "test_dl") else dls.train
            train = run_frozen(frozen, plain, "training", budget, max_bytes)
        valid = None if dls.valid is None else run_frozen(
            frozen, dls.valid, "validation", budget, max_bytes
        )  # fmt: skip
    finally:
        frozen.train(was_training)
    return ActivationCache(
        train[0], train[1], None if valid is None else valid[0], None if valid is None else
        valid[1], 1, time.perf_counter() - start, n, budget[0],
    )  # fmt: skip


class FrozenPrefixLoader:
    """The source training loader's batches (augmented, shuffled, oversampled as it is)
    through the frozen blocks in eval mode under no_grad: ``per_epoch``'s training data."""

    def __init__(self, source: Any, frozen: nn.Module, plain: Any = None) -> None:
        self.source, self.frozen, self.plain = source, frozen, plain
        self.bs = getattr(source, "bs", 64)

    def __len__(self) -> int:
        return num_batches(self.source, "dls.train")

    @torch.no_grad()
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        was_training = self.frozen.training
        self.frozen.eval()
        try:
            for i, batch in enumerate(self.source):
                x, y = check_batch(batch, f"batch {i} of the training data")
                yield self.frozen(x), y
        finally:
            self.frozen.train(was_training)

    def eval_sample(self, items: int, seed: int) -> TensorLoader | None:
        """The eval-mode training loss's sample (learner/core.py ``train_sample``): ``items``
        plain training images drawn with ``seed``, through the frozen blocks."""
        if self.plain is None:
            return None
        loader = self.plain(items, seed)
        if loader is None:
            return None
        was_training = self.frozen.training
        try:
            x, y = run_frozen(self.frozen.eval(), loader, "training sample", [0], 2**62)
        finally:
            self.frozen.train(was_training)
        return TensorLoader(x, y, bs=max(self.bs, 64))


class PartialLearner(Learner):
    """The Learner of ``freeze_to``'s stage: ``PartialModel`` on cached activations. Each fit
    and lr_find runs in the parent's layout (channels_last) and BatchNorm rule; an LR
    slice or list is spread over the parent's parameter groups (``full_groups``) and the
    groups that still train (``keep``) take theirs, so every parameter gets the LR it would
    get when the whole model trains."""

    def __init__(
        self,
        model: PartialModel,
        dls: Any,
        *,
        layout: tuple[nn.Module, ...],
        bn_eval: bool,
        full_groups: int,
        keep: list[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(model, dls, progress="silent", **kwargs)
        self.layout, self.bn_eval = layout, bn_eval
        self.full_groups, self.keep = full_groups, keep

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for m in self.layout:
            stack.enter_context(channels_last(m))
        if self.bn_eval:
            stack.enter_context(batchnorm_in_eval(self.model.rest))
        return stack

    def map_lr(self, lr: Any) -> Any:
        """A number stays; a slice or sequence is read over the parent's groups."""
        if isinstance(lr, (slice, list, tuple, np.ndarray)):
            return list(group_lrs(lr, self.full_groups)[self.keep])
        return lr

    def fit(self, epochs: int, lr: Any = 1e-3) -> Recorder:
        return super().fit(epochs, self.map_lr(lr))

    def fit_one_cycle(self, epochs: int, lr_max: Any = 1e-3, **kwargs: Any) -> Recorder:
        return super().fit_one_cycle(epochs, self.map_lr(lr_max), **kwargs)

    def _fit(self, epochs: int, hypers: Any) -> Recorder:
        with self._context():
            return super()._fit(epochs, hypers)

    def lr_find(self, *args: Any, **kwargs: Any) -> Any:
        with self._context():
            return super().lr_find(*args, **kwargs)


@dataclass
class PartialStage:
    """What ``freeze_to(n)`` built: the split, the cache and the stage's Learner."""

    n: int
    per_epoch: bool
    frozen: nn.Sequential
    cache: ActivationCache
    learner: PartialLearner


def _groups(learn: Any) -> tuple[int, list[int], list[list[nn.Parameter]]]:
    """(number of the parent's groups, indices of those with trainable parameters, their
    trainable parameters)."""
    groups = learn.splitter(learn.model) if learn.splitter else [list(learn.model.parameters())]
    kept = [[p for p in g if p.requires_grad] for g in groups]
    keep = [i for i, g in enumerate(kept) if g]
    return len(groups), keep, [kept[i] for i in keep]


def build_stage(learn: Any, n: int, per_epoch: bool, max_cache_bytes: int) -> PartialStage:
    """Cache ``learn.model.body[:n]``'s activations, then freeze it (requires_grad) and build
    the stage's Learner over the rest (``learn`` is a ``VisionLearner``). A refused cache
    leaves the model as it was."""
    body, dls = learn.model.body, learn.source_dls
    frozen = nn.Sequential(*list(body)[:n])
    with channels_last(frozen) if learn.channels_last else contextlib.nullcontext():
        once = fold_batchnorm(frozen) if learn.fold_bn else frozen  # vision/features.py
        cache = cache_activations(once, dls, n, per_epoch, max_cache_bytes)
    for i, block in enumerate(body):
        for p in block.parameters():
            p.requires_grad_(i >= n)
    for p in learn.model.head.parameters():
        p.requires_grad_(True)
    model = PartialModel(body, n, learn.model.head)
    if learn.bn == "momentum":  # the unfrozen stage's rule (VisionLearner.unfreeze)
        set_bn_momentum(model.rest, 0.1)
    bs = getattr(dls, "bs", None) or getattr(learn.dls.train, "bs", 64)
    valid = None
    if cache.valid_x is not None:
        valid = TensorLoader(cache.valid_x, cache.valid_y, bs=bs)
    if per_epoch:
        plain = getattr(learn, "train_sample", None)
        train: Any = FrozenPrefixLoader(dls.train, frozen, plain)
    else:
        balance = bool(getattr(dls.train, "oversample", False))
        train = cache.dataloaders(bs, learn.seed, balance).train
    full, keep, params = _groups(learn)
    layout = (model, frozen) if per_epoch else (model,)
    sub = PartialLearner(
        model, (train, valid), layout=layout if learn.channels_last else (),
        bn_eval=learn.bn == "frozen", full_groups=full, keep=keep,
        loss_func=learn.loss_func, opt_func=learn.opt_func, splitter=lambda m: params,
    )  # fmt: skip
    return PartialStage(n, per_epoch, frozen, cache, sub)

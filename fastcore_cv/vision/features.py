"""Body features computed ONCE: while the body is frozen, only the head trains, so running
the body every epoch (as fastai does) repeats the same work. Also: the BatchNorm layers.

Features are computed in eval mode (the body's BatchNorm uses its running statistics), which
is exactly what the exported model does at inference: a head trained on them sees what it
will see in deployment.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fastcore_cv.checks import check_int
from fastcore_cv.learner.data import DataLoaders, check_batch
from fastcore_cv.learner.fine_tune import batchnorms


@dataclass
class FeatureCache:
    """Body outputs for the training set (``views`` passes) and the validation set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor | None
    valid_y: torch.Tensor | None
    views: int
    seconds: float

    def dataloaders(self, bs: int, seed: int | None, balance: bool = False) -> DataLoaders:
        """Shuffled training batches and in-order validation batches over the features.

        ``balance``: copy the rows of smaller classes until every class has as many as the
        largest (the lesson's oversampling, for loaders built with ``oversample=True``).
        """
        x, y = self.train_x, self.train_y
        if balance and len(y):
            counts = torch.bincount(y)
            rows = [
                torch.nonzero(y == c)
                .flatten()
                .repeat(-(-int(counts.max()) // int(n)))[: counts.max()]
                for c, n in enumerate(counts.tolist())
                if n
            ]
            x, y = x[torch.cat(rows)], y[torch.cat(rows)]
        return DataLoaders.from_tensors(x, y, self.valid_x, self.valid_y, bs=bs, seed=seed)

    def __repr__(self) -> str:
        nv = 0 if self.valid_x is None else len(self.valid_x)
        return (
            f"FeatureCache(train {tuple(self.train_x.shape)} ({self.views} view(s)), "
            f"valid {nv}, computed in {self.seconds:.1f} s)"
        )


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each conv -> BatchNorm pair (the ``conv``/``bn``
    children of ``models.conv_bn``) folded into one biased conv: the same outputs to float32
    rounding, one op fewer per layer (the body's eval forward ~1.3x faster,
    bench/finetune_speed.py). For no-grad passes: the copy's weights are not ``model``'s."""
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        names = list(block._modules) if isinstance(block, nn.Sequential) else []
        if ("conv", "bn") not in zip(names, names[1:], strict=False):
            continue  # not a Sequential whose conv feeds its bn directly
        conv, bn = block.conv, block.bn
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            continue
        if bn.running_mean is None:
            continue  # no running statistics: eval mode uses the batch's
        # The folded weight keeps conv.weight's memory layout (an elementwise scale of it).
        block.conv, block.bn = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return folded


@torch.no_grad()
def run_body(body: nn.Module, loader: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated (features, targets) of ``body`` over every batch of ``loader``."""
    feats, targs = [], []
    for i, batch in enumerate(loader):
        x, y = check_batch(batch, f"batch {i} of the {name} data")
        out = body(x)
        if out.ndim != 2:
            raise ValueError(
                f"model: its body must return (N, features), got shape {tuple(out.shape)}; "
                "end the body with a global average pool and flatten"
            )
        feats.append(out.float())
        targs.append(torch.as_tensor(y))
    if not feats:
        raise ValueError(f"dls: the {name} data has no batches (empty dataset?)")
    return torch.cat(feats), torch.cat(targs)


def compute_features(
    body: nn.Module, dls: Any, views: int = 1, fold_bn: bool = True
) -> FeatureCache:
    """Run the frozen body (eval mode) over the data once.

    ``views``: passes over the training set. With ``ImageDataLoaders`` the first pass is
    the plain validation transform of every training image and each further pass one
    augmented view (``dls.test_dl(..., augment=True)``); any other loaders are iterated
    as they are, ``views`` times. ``fold_bn``: run ``fold_batchnorm(body)`` (the same
    features to float32 rounding, faster).
    """
    check_int(views, "views")
    start = time.perf_counter()
    was_training = body.training
    body.eval()
    try:
        xs, ys = [], []
        if hasattr(dls, "test_dl") and hasattr(dls, "train_ds"):
            if views > 1 and getattr(dls, "train_transform", True) is None:
                warnings.warn(
                    f"views: {views} requested but the loaders have no augmentation; the "
                    "extra views are copies of the plain one",
                    stacklevel=3,
                )
            # One augmenting loader iterated views-1 times: each pass is a new seeded epoch.
            plain = dls.test_dl(dls.train_ds)
            augmented = dls.test_dl(dls.train_ds, augment=True) if views > 1 else None
            loaders = [plain] + [augmented] * (views - 1)
        else:
            loaders = [dls.train] * views
        folded = fold_batchnorm(body) if fold_bn else body
        for loader in loaders:
            x, y = run_body(folded, loader, "training")
            xs.append(x)
            ys.append(y)
        valid = None if dls.valid is None else run_body(folded, dls.valid, "validation")
    finally:
        body.train(was_training)
    return FeatureCache(
        torch.cat(xs),
        torch.cat(ys),
        None if valid is None else valid[0],
        None if valid is None else valid[1],
        views,
        time.perf_counter() - start,
    )


def set_bn_momentum(model: nn.Module, momentum: float | None) -> None:
    for bn in batchnorms(model):
        bn.momentum = momentum

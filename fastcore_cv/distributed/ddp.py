"""``DistributedVisionLearner``: ``VisionLearner`` (vision/transfer_learner.py) on ranks.

- Frozen stage: each rank runs the body over its shard of the training and validation
  images (items ``rank::world``), then ``all_gather`` rebuilds the whole FeatureCache, in
  the single process's order, on every rank. The head then trains on identical data with
  identical seeds on every rank (no DDP: the head step costs microseconds, a collective per
  step would cost more), and rank 0's head is what DDP broadcasts when the whole model starts.
- lr_find: the seeded sweeps run once, on rank 0; the suggestion is broadcast.
- Unfrozen stage: the whole model in DistributedDataParallel over ``ShardedImageLoader``
  (sampler.py). BatchNorm stays local: ``SyncBatchNorm`` needs CUDA (torch raises on CPU
  tensors), so each rank normalises with its own b = B / world images, and DDP's
  ``forward_sync_buffers`` makes rank 0's running statistics everyone's at every forward
  (and before each validation, since the last step updates each rank's own). Under
  ``bn="frozen"`` (``body_bn_in_eval``) BatchNorm runs in eval mode and there is nothing to sync.
- Validation: each rank scores its shard of the validation set; outputs are gathered so
  every rank computes the loss and metrics over the whole set (the same numbers as one process).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist

from fastcore_cv.distributed.sampler import ShardedImageLoader
from fastcore_cv.learner.lr_finder import SWEEPS
from fastcore_cv.learner.step import collect
from fastcore_cv.vision.data import ImageDataLoaders
from fastcore_cv.vision.features import FeatureCache, compute_features
from fastcore_cv.vision.loader import ImageDataset
from fastcore_cv.vision.models import channels_last
from fastcore_cv.vision.recipes import Recipe
from fastcore_cv.vision.transfer import vision_learner
from fastcore_cv.vision.transfer_learner import VisionLearner

# Test hook (tests/distributed): the rank named here exits with code 17 at its first
# whole-model step, as a crashed or killed rank would.
EXIT_HOOK = "FASTCORE_CV_DDP_TEST_EXIT_RANK"


def subset(ds: ImageDataset, rank: int, world: int) -> ImageDataset:
    """Items ``rank::world`` of ``ds`` (the shard a rank runs the body over)."""
    return ImageDataset(ds.items[rank::world], ds.labels[rank::world], ds.classes)


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """The rows ``rank::world`` each rank holds, all_gathered back into rows 0..n-1."""
    world = dist.get_world_size()
    width = -(-n // world)
    pad = torch.zeros((width, *local.shape[1:]), dtype=local.dtype)
    pad[: len(local)] = local
    parts = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad)
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        out[r::world] = part[: len(range(r, n, world))]
    return out


def _expect(t: torch.Tensor, n: int, what: str) -> None:
    if len(t) != n:
        raise ValueError(f"{what}: {len(t)} rows for {n} images on rank {dist.get_rank()} "
                         "(an image failed to decode in the feature pass)")  # fmt: skip


def sharded_features(body: torch.nn.Module, dls: Any, views: int = 1) -> FeatureCache:
    """``compute_features`` with the images split between the ranks, then gathered."""
    rank, world = dist.get_rank(), dist.get_world_size()
    start = time.perf_counter()
    train, valid = dls.train_ds, dls.valid_ds if dls.valid is not None else None
    for name, ds in (("training", train), ("validation", valid)):
        if ds is not None and len(ds) < world:
            raise ValueError(f"--nproc: {world} ranks for {len(ds)} {name} images")
    part = subset(train, rank, world)
    vpart = None if valid is None else subset(valid, rank, world)
    view = SimpleNamespace(train_ds=part, test_dl=dls.test_dl, train=None,
                           train_transform=getattr(dls, "train_transform", None),
                           valid=None if vpart is None else dls.test_dl(vpart))  # fmt: skip
    local = compute_features(body, view, views)
    xs = local.train_x.reshape(views, len(part), -1)
    _expect(local.train_x, views * len(part), "features")
    train_x = torch.cat([gather_rows(x, len(train)) for x in xs])
    train_y = torch.as_tensor(train.labels).repeat(views)
    valid_x = valid_y = None
    if valid is not None:
        _expect(local.valid_x, len(vpart), "features")
        valid_x, valid_y = gather_rows(local.valid_x, len(valid)), torch.as_tensor(valid.labels)
    return FeatureCache(train_x, train_y, valid_x, valid_y, views, time.perf_counter() - start)


class DistributedVisionLearner(VisionLearner):
    """A VisionLearner whose every rank runs the same calls (see the module docstring)."""

    _ddp: Any = None
    _valid_shard: Any = None

    def features(self) -> FeatureCache:
        if self.feature_cache is None:  # as VisionLearner.features, sharded
            body = self.model.body
            with channels_last(body) if self.channels_last else contextlib.nullcontext():
                self.feature_cache = sharded_features(body, self.source_dls, self.views)
            if self._head_learner is not None:
                self._head_learner.dls = self._feature_dls()
        return self.feature_cache

    def freeze_to(self, n: int, **kwargs: Any) -> DistributedVisionLearner:
        """Refused: its cached stage (vision/partial.py) would train apart on each rank."""
        raise ValueError("freeze_to: not data-parallel yet; use unfreeze() on ranks")

    def suggest_lr(self, sweeps: int = SWEEPS) -> float:
        """Rank 0's median of the seeded sweeps, broadcast (the others run no sweep)."""
        self.freeze()
        self.features()  # a collective: every rank, before rank 0 goes its own way
        lr = torch.zeros(1, dtype=torch.float64)
        if dist.get_rank() == 0:
            lr[0] = super().suggest_lr(sweeps)
        dist.broadcast(lr, src=0)
        return float(lr[0])

    def _fit(self, epochs: int, hypers: Any) -> Any:
        try:
            return super()._fit(epochs, hypers)
        finally:
            self._ddp = None  # rebuilt (and re-broadcast from rank 0) at the next fit

    def one_batch(self, x: Any, y: Any, where: str = "a batch", first: bool = False) -> float:
        from torch.nn.parallel import DistributedDataParallel

        from fastcore_cv.learner.step import train_step

        if self.frozen:
            return super().one_batch(x, y, where, first)
        if os.environ.get(EXIT_HOOK) == str(dist.get_rank()):
            print(f"rank {dist.get_rank()}: exiting (test hook)", file=sys.stderr, flush=True)
            os._exit(17)
        if self._ddp is None or self._ddp.module is not self.model:
            self._ddp = DistributedDataParallel(self.model, forward_sync_buffers=True)
        return train_step(self._ddp, self.opt, self.loss_func, x, y, where, first)

    def _run_valid(self) -> tuple[float | None, dict[str, float]]:
        valid = getattr(self.source_dls, "valid_ds", None)
        world = dist.get_world_size()
        if self.frozen or self.dls.valid is None or valid is None or len(valid) < world:
            return super()._run_valid()  # the head: on the whole gathered valid features
        for buf in self.model.buffers():  # the last step updated each rank's BN statistics
            dist.broadcast(buf, src=0)  # from its own batch: validate with rank 0's, as saved
        if self._valid_shard is None:
            self._valid_shard = self.source_dls.test_dl(subset(valid, dist.get_rank(), world))
        shard = self._valid_shard
        preds, _, total, count = collect(self.model, self.loss_func, shard, "validation")
        _expect(preds, len(shard.dataset), "validation outputs")
        preds = gather_rows(preds, len(valid))
        sums = torch.tensor([total, count], dtype=torch.float64)
        dist.all_reduce(sums)
        targs = torch.as_tensor(valid.labels)
        metrics = {
            n: float(m(preds, targs)) for m, n in zip(self.metrics, self.metric_names, strict=True)
        }
        return float(sums[0] / sums[1]), metrics


def distributed_learner(folder: Any, recipe: Recipe, **kwargs: Any) -> DistributedVisionLearner:
    """``recipe_learner`` (vision/transfer.py) on this rank: the same seeded split on every
    rank, the training loader sharded, progress shown by rank 0 only."""
    if getattr(recipe, "freeze_to", None) is not None:  # before any work
        raise ValueError("--freeze-to: not data-parallel yet; train without --nproc/torchrun")
    rank, world = dist.get_rank(), dist.get_world_size()
    dls = ImageDataLoaders.from_folder(folder, **recipe.data_kwargs())
    dls.train = ShardedImageLoader(dls.train, rank, world)
    kwargs.setdefault("progress", "auto" if rank == 0 else "silent")
    return vision_learner(
        dls, recipe.arch, pretrained=recipe.use_pretrained, seed=recipe.seed,
        learner_cls=DistributedVisionLearner, **kwargs,
    )  # fmt: skip

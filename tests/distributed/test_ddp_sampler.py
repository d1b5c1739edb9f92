"""The distributed sampler (distributed/sampler.py): every rank's shard of every epoch,
against the single process's order over the same seeded stratified split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.distributed.sampler import ShardedImageLoader, global_batches, shard_positions
from fastcore_cv.vision.loader import ImageDataset, ImageLoader


def _loader(labels, bs, *, oversample=False, seed=0, drop_last=True):
    ds = ImageDataset([f"img{i}.png" for i in range(len(labels))], labels, ["a", "b", "c"])
    return ImageLoader(ds, lambda p, rng, out: None, (8, 8), bs, shuffle=True,
                       drop_last=drop_last, oversample=oversample, seed=seed)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), world=st.integers(1, 4), b=st.integers(1, 9), drop=st.booleans())
def test_shards_are_disjoint_equal_and_cover_whole_global_batches(n, world, b, drop):
    bs = world * b
    shards = [shard_positions(n, bs, world, r, drop) for r in range(world)]
    nb = global_batches(n, bs, drop)
    assert all(len(s) == nb * b for s in shards)  # the same number of batches everywhere
    # batch k of rank r is slice r of global batch k: together exactly the global batches
    together = np.stack([s.reshape(nb, b) for s in shards], axis=1).reshape(-1)
    want = np.resize(np.arange(n), nb * bs)  # padded by wrapping when not dropping
    assert np.array_equal(together, want)
    if nb * bs <= n:  # no padding: the shards are disjoint
        assert len(set(together.tolist())) == len(together)


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=3, max_size=3),
    seed=st.integers(0, 2**31),
    world=st.sampled_from([2, 3]),
    oversample=st.booleans(),
    epoch=st.integers(0, 5),
)
def test_the_ranks_together_visit_the_single_process_epoch(counts, seed, world, oversample, epoch):
    labels = np.repeat(np.arange(3), counts)
    bs = world * 2
    single = _loader(labels, bs, oversample=oversample, seed=seed)
    ranks = [ShardedImageLoader(single, r, world) for r in range(world)]
    assert {len(r) for r in ranks} == {len(single)}
    order = single.order(epoch)[: len(single) * bs]
    shards = [r.order(epoch) for r in ranks]
    got = np.stack([s.reshape(len(single), 2) for s in shards], axis=1).reshape(-1)
    if len(single.dataset) >= bs:
        assert np.array_equal(got, order)  # same seed, same epoch: the same order, dealt out
    # deterministic under the seed: a second set of ranks deals the same shards
    again = [ShardedImageLoader(_loader(labels, bs, oversample=oversample, seed=seed), r, world)
             for r in range(world)]  # fmt: skip
    assert all(np.array_equal(a.order(epoch), s) for a, s in zip(again, shards, strict=True))


def test_oversampling_is_kept_across_the_ranks():
    labels = np.repeat(np.arange(3), [80, 10, 10])  # imbalanced 8:1:1
    single = _loader(labels, 20, oversample=True, seed=3)
    ranks = [ShardedImageLoader(single, r, 2) for r in range(2)]
    seen = Counter(labels[np.concatenate([r.order(e) for r in ranks for e in range(20)])])
    total = sum(seen.values())
    for c in range(3):  # each class about a third of the draws, not 80% / 10% / 10%
        assert abs(seen[c] / total - 1 / 3) < 0.05, seen


def test_the_global_batch_must_split_evenly():
    with pytest.raises(
        ValueError, match="--bs: the global batch size 5 must be a multiple of the 2 ranks"
    ):
        ShardedImageLoader(_loader(np.zeros(10, int), 5), 0, 2)


def test_real_images_each_rank_gets_its_slice_of_the_augmented_global_batch(textures):
    """On real files, augmentation on: rank r's batch k is rows r*b.. of the single
    process's batch k, pixel for pixel (the same split, order and random draws)."""
    from fastcore_cv.vision import ImageDataLoaders

    dls = ImageDataLoaders.from_folder(textures / "train", valid_pct=0.2, seed=5, size=32, bs=8)
    assert dls.counts["valid"] == {"brick": 2, "grass": 2, "gravel": 2}  # stratified split
    single = [b for b in dls.train]  # epoch 0
    for r in range(2):
        mine = ShardedImageLoader(dls.train, r, 2)
        for (x, y), (gx, gy) in zip(mine, single, strict=True):
            assert torch.equal(y, gy[r * 4 : (r + 1) * 4])
            assert torch.equal(x, gx[r * 4 : (r + 1) * 4])

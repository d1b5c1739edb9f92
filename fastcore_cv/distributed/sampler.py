"""The project's seeded sampler (vision/loader.py ``ImageLoader.order``: the seeded
stratified split of vision/data.py, shuffling or oversampling per epoch) split between ranks.

Every rank builds the same split and draws the same epoch order (same seed, same epoch:
oversampling included); global batch ``k`` is positions ``k*B .. (k+1)*B`` of that order, as
in a single process with batch size ``B``, and rank ``r`` takes its slice
``k*B + r*b .. k*B + (r+1)*b`` (``b = B / world``). So the ranks' shards are disjoint, every
rank has the same number of batches, and DDP's averaged gradient is the single process's
batch gradient. Padding: with ``drop_last`` (training) the order is cut to whole global
batches, exactly as the single process drops its last partial batch; without it the order
is padded to whole global batches by repeating its first items (np.resize), so a few
images are seen twice in that epoch. Augmentation draws from the item's global position, so
every image gets the augmentation it gets in a single process.
"""

from __future__ import annotations

import numpy as np

from fastcore_cv.vision.loader import ImageLoader


def global_batches(n: int, bs: int, drop_last: bool) -> int:
    """Global batches per epoch over ``n`` items (``ImageLoader``'s rule)."""
    return n // bs if drop_last and n >= bs else -(-n // bs)


def shard_positions(n: int, bs: int, world: int, rank: int, drop_last: bool) -> np.ndarray:
    """Positions in the epoch's order (0 .. n-1, padded by wrapping) that ``rank`` visits."""
    if bs % world:
        raise ValueError(
            f"--bs: the global batch size {bs} must be a multiple of the {world} ranks"
        )
    if not 0 <= rank < world:
        raise ValueError(f"rank: {rank} outside 0..{world - 1}")
    nb, b = global_batches(n, bs, drop_last), bs // world
    pos = np.resize(np.arange(n), nb * bs).reshape(nb, bs) if n else np.zeros((0, bs), int)
    return pos[:, rank * b : (rank + 1) * b].reshape(-1)


class ShardedImageLoader(ImageLoader):
    """``base``'s batches for one rank: batch size ``base.bs / world`` (``base.bs`` is the
    global batch), the same number of batches as ``base`` on every rank."""

    def __init__(self, base: ImageLoader, rank: int, world: int) -> None:
        self.global_bs, self.rank, self.world = base.bs, rank, world
        shard_positions(0, base.bs, world, rank, False)  # checks bs and rank first
        super().__init__(
            base.dataset, base.transform, base.size, base.bs // world, shuffle=base.shuffle,
            oversample=base.oversample, seed=base.seed, num_workers=base.num_workers,
            strict=base.strict,
        )  # fmt: skip
        self.drop_last = base.drop_last  # base's rule: len(dataset) >= the global batch
        self._positions = shard_positions(len(base.dataset), base.bs, world, rank, self.drop_last)

    def __len__(self) -> int:
        return global_batches(len(self.dataset), self.global_bs, self.drop_last)

    def global_order(self, epoch: int) -> np.ndarray:
        """The single process's order of epoch ``epoch`` (the same on every rank)."""
        return super().order(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The dataset indices this rank visits in epoch ``epoch``, in order."""
        return self.global_order(epoch)[self._positions]

    def _load(self, epoch: int, position: int, index: int, out: np.ndarray):
        # position within this shard -> position in the global order: the same random draw
        return super()._load(epoch, int(self._positions[position]), index, out)

    def __repr__(self) -> str:
        where = f"rank {self.rank} of {self.world}, global bs={self.global_bs}"
        return f"{super().__repr__()[:-1]}, {where})"

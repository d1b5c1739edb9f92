"""Batches of decoded images: ``(x float32 NCHW, y int64)`` torch tensors, seeded per epoch.

No worker processes: decoding runs in the caller's thread, or with ``num_workers > 0`` in a
thread pool that also decodes the next batches while the model works on this one (Pillow's
decoders and resamplers release the GIL).
"""

from __future__ import annotations

import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from fastcore_cv.checks import check_int
from fastcore_cv.vision.decode import ImageError
from fastcore_cv.vision.verify import BadImage, BadImageWarning

# transform(path, rng, out) fills out (3, H, W) float32; rng drives any randomness.
Transform = Callable[[Path, np.random.Generator, np.ndarray], object]


class ImageDataset:
    """One split: image paths and their class indices into ``classes``."""

    def __init__(self, items: Sequence[Path], labels: Sequence[int], classes: Sequence[str]):
        self.items = [Path(p) for p in items]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.classes = list(classes)
        if len(self.items) != len(self.labels):
            raise ValueError(f"labels: {len(self.labels)} labels for {len(self.items)} items")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Path, int]:
        return self.items[i], int(self.labels[i])

    def counts(self) -> dict[str, int]:
        """Images per class, every class listed (0 when absent)."""
        c = Counter(self.labels.tolist())
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def __repr__(self) -> str:
        return f"ImageDataset({len(self)} images, {len(self.classes)} classes)"


class ImageLoader:
    """Re-iterable batches over an ImageDataset; each ``iter()`` is the next epoch.

    Epoch ``e`` draws its order and every item's augmentation from generators seeded with
    ``(seed, e, ...)``: the same seed gives the same batches, whatever ``num_workers`` is.
    ``oversample``: each epoch draws len(dataset) items with replacement, weighted 1/count of
    their class, so every class is seen about equally (the lesson's "make a few copies").
    ``drop_last`` drops a final partial batch, unless that would leave no batch at all.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        transform: Transform,
        size: tuple[int, int],
        bs: int = 64,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        oversample: bool = False,
        seed: int | None = None,
        num_workers: int = 0,
        strict: bool = False,
    ) -> None:
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f"bs: batch size must be an int >= 1, got {bs!r}")
        check_int(num_workers, "num_workers", 0)
        self.dataset, self.transform, self.size = dataset, transform, tuple(size)
        self.bs, self.shuffle, self.oversample = bs, shuffle, oversample
        self.drop_last = drop_last and len(dataset) >= bs
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.num_workers, self.strict = num_workers, strict
        self.epoch = 0
        self.skipped: list[BadImage] = []  # files that failed while iterating
        self._pool: ThreadPoolExecutor | None = None
        self._weights = None
        if oversample and len(dataset):
            per_class = np.bincount(dataset.labels, minlength=len(dataset.classes))
            w = 1.0 / per_class[dataset.labels]
            self._weights = w / w.sum()

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.bs if self.drop_last else -(-n // self.bs)

    def order(self, epoch: int) -> np.ndarray:
        """The dataset indices epoch ``epoch`` visits, in order (before drop_last)."""
        n = len(self.dataset)
        if self._weights is not None:
            return np.random.default_rng((self.seed, epoch, 1)).choice(n, n, p=self._weights)
        if self.shuffle:
            return np.random.default_rng((self.seed, epoch, 0)).permutation(n)
        return np.arange(n)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = self.order(epoch)[: len(self) * self.bs]
        chunks = [order[i : i + self.bs] for i in range(0, len(order), self.bs)]
        if self.num_workers == 0:
            for b, idx in enumerate(chunks):
                buf = self._buffer(len(idx))
                loaded = [self._load(epoch, b * self.bs + j, i, buf[j]) for j, i in enumerate(idx)]
                batch = self._collate(idx, buf, loaded)
                if batch is not None:
                    yield batch
            return
        yield from self._iter_threaded(epoch, chunks)

    def _iter_threaded(self, epoch: int, chunks: list[np.ndarray]):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="fastcore-cv")
        pool = self._pool
        pending: deque[tuple[np.ndarray, list[Future]]] = deque()

        def submit(b: int) -> None:
            idx, buf = chunks[b], self._buffer(len(chunks[b]))
            jobs = [
                pool.submit(self._load, epoch, b * self.bs + j, i, buf[j])
                for j, i in enumerate(idx)
            ]
            pending.append((buf, jobs))

        ahead = 2  # batches decoded ahead of the consumer
        for b in range(min(ahead, len(chunks))):
            submit(b)
        try:
            for b, idx in enumerate(chunks):
                buf, jobs = pending.popleft()
                if b + ahead < len(chunks):
                    submit(b + ahead)
                batch = self._collate(idx, buf, [job.result() for job in jobs])
                if batch is not None:
                    yield batch
        finally:  # an abandoned epoch must not keep decoding
            for _, jobs in pending:
                for job in jobs:
                    job.cancel()

    def _buffer(self, n: int) -> np.ndarray:
        # A fresh buffer per batch: a consumer may keep the tensors (e.g. to cache features).
        return np.empty((n, 3, *self.size), np.float32)

    def _load(self, epoch: int, position: int, index: int, out: np.ndarray) -> BadImage | None:
        path = self.dataset.items[index]
        rng = np.random.default_rng((self.seed, epoch, 2, position))
        try:
            self.transform(path, rng, out)
        except ImageError as e:
            if self.strict:
                raise
            return BadImage(path, e.reason, e.detail)
        return None

    def _collate(
        self, idx: np.ndarray, buf: np.ndarray, loaded: list[BadImage | None]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        bad = [r for r in loaded if r is not None]
        if bad:
            known = {b.path for b in self.skipped}
            new = [b for b in bad if b.path not in known]
            if new:
                self.skipped.extend(new)
                listed = "; ".join(str(b) for b in new)
                msg = f"skipped {len(new)} bad image(s): {listed}"
                warnings.warn(msg, BadImageWarning, stacklevel=3)
            keep = np.array([r is None for r in loaded])
            if not keep.any():
                return None
            buf, idx = buf[keep], idx[keep]
        y = np.ascontiguousarray(self.dataset.labels[idx])
        return torch.from_numpy(buf), torch.from_numpy(y)

    def one_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch of the next epoch (advances the epoch counter)."""
        return next(iter(self))

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)  # __init__ may have raised before setting it
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return (
            f"ImageLoader({len(self.dataset)} images, bs={self.bs}, {len(self)} batches, "
            f"shuffle={self.shuffle}, oversample={self.oversample})"
        )

"""What the Learner eats: a train and a valid iterable of (x, y) batches, checked as they come.

Any re-iterable works (a list of pairs, a torch ``DataLoader``); ``TensorLoader`` is a tiny
shuffling loader over in-memory tensors for lessons and tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class TensorLoader:
    """Mini-batches ``(x[i:i+bs], y[i:i+bs])`` over in-memory tensors, optionally shuffled.

    With ``seed`` the loader owns its generator (each epoch a new order, the sequence
    repeatable); without it, shuffling draws from torch's global generator, which
    ``set_seed``/``Learner(seed=...)`` control.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        bs: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        self.x, self.y = _as_tensor(x, "x"), _as_tensor(y, "y")
        if len(self.x) != len(self.y):
            raise ValueError(
                f"y: {len(self.y)} labels for {len(self.x)} inputs x; "
                "every input needs exactly one label"
            )
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f"bs: batch size must be an int >= 1, got {bs!r}")
        self.bs, self.shuffle, self.drop_last = bs, shuffle, drop_last
        self._gen = None
        if seed is not None:
            self._gen = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.bs if self.drop_last else -(-n // self.bs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self._gen) if self.shuffle else None
        for b in range(len(self)):
            if order is None:
                yield (
                    self.x[b * self.bs : (b + 1) * self.bs],
                    self.y[b * self.bs : (b + 1) * self.bs],
                )
            else:
                idx = order[b * self.bs : (b + 1) * self.bs]
                yield self.x[idx], self.y[idx]


@dataclass
class DataLoaders:
    """A training and an (optional) validation iterable of ``(x, y)`` batches."""

    train: Iterable
    valid: Iterable | None = None

    @classmethod
    def from_tensors(
        cls,
        x_train: Any,
        y_train: Any,
        x_valid: Any = None,
        y_valid: Any = None,
        *,
        bs: int = 64,
        shuffle: bool = True,
        seed: int | None = None,
    ) -> DataLoaders:
        """Loaders over arrays/tensors; the training set is shuffled, validation never is."""
        train = TensorLoader(x_train, y_train, bs=bs, shuffle=shuffle, seed=seed)
        if (x_valid is None) != (y_valid is None):
            raise ValueError("y_valid: give both x_valid and y_valid, or neither")
        valid = None if x_valid is None else TensorLoader(x_valid, y_valid, bs=bs)
        return cls(train, valid)


def as_dataloaders(dls: Any) -> DataLoaders:
    """Accept a ``DataLoaders``, anything with ``.train``/``.valid``, or a (train, valid) pair."""
    if hasattr(dls, "train"):
        train, valid = dls.train, getattr(dls, "valid", None)
    elif isinstance(dls, (tuple, list)) and len(dls) == 2:
        train, valid = dls
    else:
        raise TypeError(
            "dls: expected a DataLoaders, an object with .train and .valid, or a "
            f"(train, valid) pair of batch iterables; got {type(dls).__name__}"
        )
    for name, loader in (("dls.train", train), ("dls.valid", valid)):
        if loader is None and name == "dls.valid":
            continue
        if not isinstance(loader, Iterable):
            raise TypeError(
                f"{name}: expected an iterable of (x, y) batches, got {type(loader).__name__}"
            )
        if iter(loader) is loader:
            raise TypeError(
                f"{name}: is a one-shot iterator (e.g. a generator); every epoch iterates it "
                "again, so pass a list or a DataLoader"
            )
    return DataLoaders(train, valid)


def num_batches(loader: Iterable, name: str) -> int:
    """``len(loader)``, or a clear TypeError when the loader cannot say how long it is."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name}: has no len(); per-batch schedules (fit_one_cycle, lr_find) need to "
            "know the number of batches in advance"
        ) from None


def check_batch(batch: Any, where: str) -> tuple[Any, torch.Tensor]:
    """Return a batch as ``(x, y)`` with NumPy converted to tensors; raise naming the problem."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = (
            f"{type(batch).__name__} of length {len(batch)}"
            if hasattr(batch, "__len__")
            else type(batch).__name__
        )
        raise TypeError(f"batch: {where} is not an (x, y) pair (got a {got})")
    x, y = (torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in batch)
    nx, ny = _length(x), _length(y)
    if nx == 0:
        raise ValueError(f"x: {where} is empty (0 items); remove empty batches")
    if nx is not None and ny is not None and nx != ny:
        raise ValueError(
            f"y: {where} has {ny} labels for {nx} inputs x; every input needs exactly one label"
        )
    return x, y


def endless_batches(loader: Iterable, name: str) -> Iterator[tuple[tuple[Any, Any], str]]:
    """Checked batches of ``loader``, pass after pass (lr_find may need more than one epoch)."""
    n_pass = 0
    while True:
        seen = False
        for i, batch in enumerate(loader):
            seen = True
            where = f"batch {i} of the {name} data in lr_find pass {n_pass}"
            yield check_batch(batch, where), where
        if not seen:
            raise ValueError("dls.train: the training data has no batches (empty dataset?)")
        n_pass += 1


def count_nonfinite(t: Any) -> tuple[int, int]:
    """(number of NaN/inf entries, total entries) of a floating tensor; (0, n) otherwise."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        return 0, t.numel() if isinstance(t, torch.Tensor) else 0
    return int((~torch.isfinite(t)).sum()), t.numel()


def _length(v: Any) -> int | None:
    if isinstance(v, torch.Tensor):
        return v.shape[0] if v.ndim else None
    try:
        return len(v)
    except TypeError:
        return None


def _as_tensor(v: Any, name: str) -> torch.Tensor:
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    if isinstance(v, torch.Tensor):
        if v.ndim == 0:
            raise ValueError(f"{name}: expected one row per item, got a 0-d (scalar) tensor")
        return v
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(v).__name__}")

"""Reproducibility: one call seeds every random source a training run touches."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU) with ``seed``.

    After this, shuffling loaders that draw from torch's global generator, dropout and
    weight initialisation repeat exactly from run to run.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing the global random state (used by ``lr_find``).

    A sweep draws batches and dropout masks; restoring the generators afterwards means
    ``lr_find(); fit()`` trains exactly like ``fit()`` alone.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)

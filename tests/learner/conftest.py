"""Shared fixtures for the learner tests: tiny synthetic problems, one thread (see below)."""

import pytest
import torch
from torch import nn

from fastcore_cv.learner import DataLoaders, set_seed


@pytest.fixture(autouse=True)
def _small_models_on_one_thread(one_thread):
    """Every learner test runs on one thread (the shared ``one_thread`` fixture)."""
    yield


def make_blobs(n: int = 400, d: int = 8, c: int = 3, seed: int = 0, noise: float = 0.0):
    """A linearly separable-ish classification problem: labels = argmax of a random projection."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, c, generator=g) + noise * torch.randn(n, c, generator=g)).argmax(1)
    return x, y


def make_mlp(d: int = 8, c: int = 3, seed: int = 0) -> nn.Module:
    """A 8-16-3 MLP whose initial weights depend only on ``seed``."""
    set_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, c))


@pytest.fixture
def blobs():
    return make_blobs


@pytest.fixture
def mlp():
    return make_mlp


@pytest.fixture
def dls():
    """320 training / 80 validation items of the blobs problem, batches of 32."""
    x, y = make_blobs()
    return DataLoaders.from_tensors(x[:320], y[:320], x[320:], y[320:], bs=32)

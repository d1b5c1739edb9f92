"""set_seed makes every random source repeat; preserved_rng leaves them untouched."""

import random

import numpy as np
import pytest
import torch

from fastcore_cv.learner.seed import preserved_rng, set_seed


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_same_seed_same_numbers_different_seed_different():
    set_seed(3)
    a = draw()
    set_seed(3)
    assert draw() == a
    set_seed(4)
    assert draw() != a


def test_preserved_rng_restores_every_generator():
    set_seed(0)
    with preserved_rng():
        draw()
    after = draw()
    set_seed(0)
    assert draw() == after


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_seed(bad, err):
    with pytest.raises(err, match="seed"):
        set_seed(bad)

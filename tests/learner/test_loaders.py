"""Loaders (learner/data.py): each epoch covers the data once, seeds repeat, bad data named."""

import numpy as np
import pytest
import torch

from fastcore_cv.learner.data import (
    DataLoaders,
    TensorLoader,
    as_dataloaders,
    check_batch,
    num_batches,
)


@pytest.mark.parametrize("n, bs", [(1, 1), (7, 3), (10, 5), (13, 64)])
def test_batches_cover_every_item_once(n, bs):
    x, y = torch.arange(n).float()[:, None], torch.arange(n)
    loader = TensorLoader(x, y, bs=bs, shuffle=True, seed=0)
    seen = torch.cat([yb for _, yb in loader])
    assert len(loader) == -(-n // bs)
    assert sorted(seen.tolist()) == list(range(n))
    for xb, yb in loader:
        assert torch.equal(xb[:, 0].long(), yb)  # x and y stay paired after shuffling


def test_drop_last():
    loader = TensorLoader(torch.zeros(10, 1), torch.zeros(10), bs=3, drop_last=True)
    assert len(loader) == 3 and [len(b[1]) for b in loader] == [3, 3, 3]


def test_seeded_shuffle_repeats_and_varies_per_epoch():
    x, y = torch.zeros(50, 1), torch.arange(50)
    a, b = (
        TensorLoader(x, y, bs=50, shuffle=True, seed=1),
        TensorLoader(x, y, bs=50, shuffle=True, seed=1),
    )
    first_a, first_b = next(iter(a))[1], next(iter(b))[1]
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, next(iter(a))[1])  # the next epoch has a new order


def test_unshuffled_keeps_order_and_numpy_is_accepted():
    dls = DataLoaders.from_tensors(np.ones((5, 2), np.float32), np.arange(5), bs=2, shuffle=False)
    assert [yb.tolist() for _, yb in dls.train] == [[0, 1], [2, 3], [4]]
    assert dls.valid is None


def test_label_count_mismatch_is_named():
    with pytest.raises(ValueError, match="y: 9 labels for 10 inputs"):
        TensorLoader(torch.zeros(10, 2), torch.zeros(9))
    with pytest.raises(ValueError, match="y: batch 0 .* has 3 labels for 4 inputs"):
        check_batch((torch.zeros(4, 2), torch.zeros(3)), "batch 0 of the training data")


def test_bad_batches_and_loaders():
    with pytest.raises(TypeError, match="batch"):
        check_batch(torch.zeros(3), "batch 0")
    with pytest.raises(ValueError, match="x: .*empty"):
        check_batch((torch.zeros(0, 2), torch.zeros(0)), "batch 0")
    with pytest.raises(ValueError, match="bs"):
        TensorLoader(torch.zeros(3, 1), torch.zeros(3), bs=0)
    with pytest.raises(TypeError, match="x"):
        TensorLoader([1, 2], torch.zeros(2))
    with pytest.raises(ValueError, match="y_valid"):
        DataLoaders.from_tensors(torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(TypeError, match="dls"):
        as_dataloaders(42)
    with pytest.raises(TypeError, match="dls.train: is a one-shot iterator"):
        as_dataloaders(((b for b in []), None))
    with pytest.raises(TypeError, match="dls.train: has no len"):
        num_batches(_Unsized(), "dls.train")


class _Unsized:
    def __iter__(self):
        return iter([])


def test_pair_and_object_forms():
    train = [(torch.zeros(2, 1), torch.zeros(2))]
    assert as_dataloaders((train, None)).train is train
    assert as_dataloaders(DataLoaders(train, train)).valid is train

"""The eval-mode training loss: measured like valid_loss (eval mode, end-of-epoch weights)
on a fixed seeded sample of the training set, recorded as its own column."""

import numpy as np
import torch
from torch import nn

from fastcore_cv.learner import DataLoaders, Learner, set_seed


def dropout_learner(blobs, **kw):
    x, y = blobs(n=600)
    set_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    dls = DataLoaders.from_tensors(x[:500], y[:500], x[500:], y[500:], bs=32)
    return Learner(model, dls, progress="silent", **kw)


def reference_loss(model, x, y):
    """float64 cross-entropy of the model in eval mode (dropout off)."""
    model.eval()
    with torch.no_grad():
        logits = model(x).double()
    return float(nn.functional.cross_entropy(logits, y))


def test_column_is_the_eval_mode_loss_of_a_fixed_seeded_sample(blobs):
    learn = dropout_learner(blobs)
    learn.fit(2, 0.1)
    sample = learn.train_sample(learn.train_eval_items, learn.train_eval_seed)
    xs, ys = sample.x, sample.y
    # up to 256 items, at most a quarter of the 500 training items; no item twice
    assert len(xs) == 125 == Learner.train_sample_size(500, 256)
    assert len(set(map(tuple, xs.tolist()))) == 125
    row = learn.recorder.history.epochs[-1]
    # float32 forward over 256 items: a few eps of the loss's size
    ref = reference_loss(learn.model, xs, ys)
    assert abs(row.train_loss_eval - ref) < 1e-5 * max(1.0, ref)
    # the running mean is taken in train mode with dropout on: a different number
    assert abs(row.train_loss - row.train_loss_eval) > 1e-3
    # the sample is the same every epoch and every fit: drawn from the seed alone
    again = learn.train_sample(256, 0)
    assert torch.equal(again.x, sample.x) and not torch.equal(learn.train_sample(256, 1).x, xs)


def test_recorded_each_epoch_timed_and_shown_in_the_table(blobs):
    learn = dropout_learner(blobs)
    learn.fit(3, 0.1)
    rows = learn.recorder.history.epochs
    assert all(r.train_loss_eval is not None and np.isfinite(r.train_loss_eval) for r in rows)
    assert all(0 < r.train_eval_time < r.time for r in rows)
    assert learn.recorder.history.train_eval_losses == [r.train_loss_eval for r in rows]
    assert rows[-1].get("train_loss_eval") == rows[-1].train_loss_eval
    header, first = learn.recorder.table().splitlines()[:2]
    assert header.split()[2] == "train_loss_eval"
    assert float(first.split()[2]) == round(rows[0].train_loss_eval, 6)


def test_off_with_zero_items_and_for_loaders_that_cannot_sample(blobs, mlp):
    learn = dropout_learner(blobs)
    learn.train_eval_items = 0
    learn.fit(1, 0.1)
    assert learn.recorder.history.epochs[0].train_loss_eval is None
    x, y = blobs(n=64)
    plain = Learner(mlp(), ([(x[:32], y[:32]), (x[32:], y[32:])], None), progress="silent")
    plain.fit(1, 0.1)  # a list of batches: no sample to draw, the column shows "-"
    assert plain.recorder.history.epochs[0].train_loss_eval is None
    assert plain.recorder.table().splitlines()[1].split()[2] == "-"


def test_a_loader_may_offer_its_own_sample(blobs, mlp):
    x, y = blobs(n=64)

    class Batches(list):
        def eval_sample(self, items, seed):
            return [(x[:items], y[:items])]

    learn = Learner(mlp(), (Batches([(x, y)]), None), progress="silent")
    learn.train_eval_items = 16
    learn.fit(1, 0.1)
    ref = reference_loss(learn.model, x[:16], y[:16])
    assert abs(learn.recorder.history.epochs[0].train_loss_eval - ref) < 1e-5 * max(1.0, ref)

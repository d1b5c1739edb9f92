"""The Learner: training loop, schedules reaching the optimizer, seeds, and bad input."""

import functools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastcore_cv.learner import (
    DataLoaders,
    Learner,
    NonFiniteLossError,
    TerminateOnNaN,
    accuracy,
    error_rate,
    one_cycle,
)


def test_fit_trains_and_records_everything(dls, mlp):
    learn = Learner(mlp(), dls, metrics=[accuracy, error_rate], progress="silent")
    before = learn.validate()
    learn.fit(3, 0.1)
    h = learn.recorder.history
    assert len(h.epochs) == 3 and len(h.batch_losses) == 30 == h.epochs[-1].iters
    assert h.batch_lrs == [0.1] * 30 and h.batch_moms == [0.9] * 30  # default SGD momentum
    assert len(h.batch_times) == 30 and all(t > 0 for t in h.batch_times)
    last = h.epochs[-1]
    assert last.valid_loss < before["valid_loss"] and last.metrics["accuracy"] > 0.8
    assert last.metrics["error_rate"] == pytest.approx(1 - last.metrics["accuracy"])
    assert learn.validate()["valid_loss"] == pytest.approx(last.valid_loss)


@pytest.mark.parametrize(
    "opt_func, key",
    [
        (functools.partial(torch.optim.SGD, momentum=0.9), "momentum"),
        (None, "betas"),  # the default: AdamW, fastai's beta2 0.99
        (torch.optim.Adam, "betas"),
        (torch.optim.AdamW, "betas"),
    ],
)
def test_one_cycle_schedule_reaches_the_optimizer(dls, mlp, opt_func, key):
    learn = Learner(mlp(), dls, opt_func=opt_func, progress="silent")
    learn.fit_one_cycle(2, 0.05, pct_start=0.3)
    lrs, moms = one_cycle(20, 0.05, pct_start=0.3)
    h = learn.recorder.history
    np.testing.assert_allclose(h.batch_lrs, lrs[:, 0])
    np.testing.assert_allclose(h.batch_moms, moms)  # SGD momentum, or Adam's beta1
    g = learn.opt.param_groups[0]
    assert (g["momentum"] if key == "momentum" else g["betas"][0]) == pytest.approx(moms[-1])
    if key == "betas":
        assert g["betas"][1] == (0.99 if opt_func is None else 0.999)  # beta2 untouched


def test_same_seed_same_batches_and_numbers(mlp, blobs):
    x, y = blobs()

    def run(seed):
        dls = DataLoaders.from_tensors(x[:320], y[:320], x[320:], y[320:], bs=32)  # shuffles
        learn = Learner(mlp(seed=0), dls, seed=seed, progress="silent")
        learn.fit_one_cycle(2, 0.1)
        return learn.recorder.history.batch_losses, [
            p.detach().clone() for p in learn.model.parameters()
        ]

    a, b, c = run(7), run(7), run(8)
    assert a[0] == b[0] and all(torch.equal(p, q) for p, q in zip(a[1], b[1], strict=True))
    assert a[0] != c[0]  # another seed shuffles differently


def test_opt_func_injection(dls, mlp):
    made = []

    def my_opt(params, lr):
        made.append(lr)
        return torch.optim.SGD(params, lr=lr)

    learn = Learner(mlp(), dls, opt_func=my_opt, progress="silent")
    learn.fit(1, 0.2)
    assert made == [1e-3] and learn.recorder.history.batch_moms[0] == 0.0
    sgd = functools.partial(torch.optim.SGD, momentum=0.5)
    partial = Learner(mlp(), dls, opt_func=sgd, progress="silent")
    partial.fit(1, 0.1)
    assert partial.opt.param_groups[0]["momentum"] == 0.5


def test_optimizer_persists_across_fits(dls, mlp):
    learn = Learner(mlp(), dls, progress="silent")
    learn.fit(1, 0.1)
    opt = learn.opt
    learn.fit(1, 0.1)
    assert learn.opt is opt and learn.opt.state  # momentum buffers carried over


def test_pairs_lists_and_torch_dataloaders(blobs, mlp):
    x, y = blobs()
    train = DataLoader(TensorDataset(x[:320], y[:320]), batch_size=32, shuffle=True)
    valid = [(x[320:], y[320:])]
    learn = Learner(mlp(), (train, valid), metrics=[accuracy], progress="silent")
    learn.fit(2, 0.1)
    assert learn.recorder.history.epochs[-1].metrics["accuracy"] > 0.6


def test_get_preds(dls, mlp):
    learn = Learner(mlp(), dls, metrics=[accuracy], progress="silent")
    learn.fit(1, 0.1)
    probs, targs = learn.get_preds()
    assert probs.shape == (80, 3) and torch.allclose(probs.sum(1), torch.ones(80))
    assert torch.equal(targs, dls.valid.y)
    assert accuracy(probs, targs) == pytest.approx(learn.validate()["accuracy"])
    logits, _ = learn.get_preds(act=None)
    assert torch.allclose(torch.softmax(logits, 1), probs)
    assert learn.get_preds("train")[0].shape == (320, 3)
    with pytest.raises(ValueError, match="ds"):
        learn.get_preds("test")


def test_discriminative_lrs_with_a_splitter(dls, mlp):
    def splitter(m):
        return [list(m[0].parameters()), list(m[2].parameters())]

    learn = Learner(mlp(), dls, splitter=splitter, progress="silent")
    learn.fit(1, slice(1e-3, 1e-1))
    lo, hi = (g["lr"] for g in learn.opt.param_groups)
    assert (lo, hi) == pytest.approx((1e-3, 1e-1))
    assert learn.recorder.history.batch_lrs[0] == pytest.approx(1e-1)  # the head's LR
    learn.fit_one_cycle(1, [1e-3, 1e-2])
    assert max(learn.recorder.history.batch_lrs) == pytest.approx(1e-2, rel=0.05)


def test_no_validation_set(blobs, mlp):
    x, y = blobs()
    learn = Learner(mlp(), DataLoaders.from_tensors(x, y, bs=50), progress="silent")
    learn.fit(1, 0.1)
    assert learn.recorder.history.epochs[0].valid_loss is None
    assert learn.validate() == {"valid_loss": None}
    assert [f.code for f in learn.diagnose()][0] == "no_validation"


def test_thread_policy_reaches_torch_on_import():
    # torch is not loaded when the count is set; importing the learner loads it and applies it
    code = (
        "import sys, fastcore_cv; fastcore_cv.set_num_threads(1); "
        "assert 'torch' not in sys.modules; import fastcore_cv.learner, torch; "
        "print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1"]


# -- bad input: a clear error naming the problem -------------------------------------------


def batches(*pairs):
    return [(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)) for x, y in pairs]


GOOD = (np.ones((4, 8)), [0, 1, 2, 0])


@pytest.mark.parametrize(
    "train, err, match",
    [
        ([], ValueError, "dls.train: the training data has no batches"),
        (
            batches(GOOD, (np.ones((4, 8)), [0, 1, 2])),
            ValueError,
            r"y: batch 1 of the training data .* 3 labels for 4 inputs",
        ),
        (
            [torch.ones(4, 8)],
            TypeError,
            r"batch: batch 0 of the training data in epoch 0 is not an \(x, y\) pair",
        ),
        (
            batches((np.ones((4, 5)), [0, 1, 2, 0])),
            ValueError,
            r"model: failed on batch 0 of the training data in epoch 0 "
            r"\(x: float32 tensor of shape \(4, 5\)\): RuntimeError: mat1",
        ),
        (
            batches((np.ones((4, 8)), [0, 1, 7, 0])),
            ValueError,
            "loss_func: failed on batch 0 of the training data",
        ),
    ],
)
def test_bad_training_data(mlp, train, err, match):
    learn = Learner(mlp(), (train, None), progress="silent")
    with pytest.raises(err, match=match):
        learn.fit(1)


def test_empty_unsized_loader(mlp):
    class Empty:
        def __iter__(self):
            return iter(())

    learn = Learner(mlp(), (Empty(), None), progress="silent")
    with pytest.raises(ValueError, match="dls.train: yielded no batches"):
        learn.fit(1)
    with pytest.raises(TypeError, match="dls.train: has no len"):
        learn.fit_one_cycle(1)  # a per-batch schedule needs the number of batches


def test_nan_inputs_are_named_and_never_reach_the_weights(mlp):
    x = np.ones((4, 8))
    x[1, 3] = np.nan
    learn = Learner(mlp(), (batches(GOOD, GOOD, (x, [0, 1, 2, 0])), None), progress="silent")
    with pytest.raises(ValueError, match="x: batch 2 of the training data .* 1 NaN/inf value"):
        learn.fit(1, 0.1)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    learn = Learner(mlp(), (batches(GOOD), batches((x, [0, 1, 2, 0]))), progress="silent")
    with pytest.raises(ValueError, match="x: batch 0 of the validation data"):
        learn.fit(1, 0.1)


class InfAfter(nn.Module):
    """Cross-entropy that turns into +inf from its ``k``-th call on (a loss 'going to inf')."""

    def __init__(self, k):
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, out, y):
        self.calls += 1
        loss = nn.functional.cross_entropy(out, y)
        return loss * math.inf if self.calls > self.k else loss


def test_loss_going_to_inf_stops_with_a_clear_message(dls, mlp):
    learn = Learner(mlp(), dls, loss_func=InfAfter(5), progress="silent")
    with pytest.warns(
        RuntimeWarning, match="training loss became inf at epoch 0, batch 5.*too high"
    ):
        learn.fit(3, 0.1)
    h = learn.recorder.history
    assert h.diverged and len(h.batch_losses) == 6 and len(h.epochs) == 1
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert [f.code for f in learn.diagnose()] == ["lr_too_high"]


def test_loss_going_to_inf_can_raise(dls, mlp):
    learn = Learner(mlp(), dls, loss_func=InfAfter(3), cbs=[TerminateOnNaN(raise_error=True)])
    with pytest.raises(NonFiniteLossError, match="training loss became inf"):
        learn.fit(1, 0.1)


def test_infinite_loss_before_any_update_is_not_blamed_on_the_lr(dls, mlp):
    learn = Learner(mlp(), dls, loss_func=InfAfter(0), progress="silent")
    with pytest.raises(ValueError, match="loss_func: returned inf .* before any weight update"):
        learn.fit(1, 0.1)


@pytest.mark.parametrize("model", [nn.ReLU(), nn.Linear(8, 3).requires_grad_(False)])
def test_model_without_trainable_parameters(dls, model):
    learn = Learner(model, dls, progress="silent")
    with pytest.raises(ValueError, match="model: has no trainable parameters"):
        learn.fit(1)
    with pytest.raises(ValueError, match="model: has no trainable parameters"):
        learn.lr_find()


def test_loss_that_is_not_a_single_number(dls, mlp):
    learn = Learner(mlp(), dls, loss_func=nn.CrossEntropyLoss(reduction="none"), progress="silent")
    with pytest.raises(ValueError, match="loss_func: must return one number"):
        learn.fit(1)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(model=object()), TypeError, "model"),
        (dict(loss_func=3), TypeError, "loss_func"),
        (dict(opt_func="sgd"), TypeError, "opt_func"),
        (dict(metrics=[accuracy, accuracy]), ValueError, "metrics"),
        (dict(cbs=[object()]), TypeError, "cbs"),
        (dict(dls=5), TypeError, "dls"),
        (dict(progress="loud"), ValueError, "mode"),
    ],
)
def test_bad_constructor_arguments(dls, mlp, kwargs, err, match):
    args = dict(model=mlp(), dls=dls) | kwargs
    with pytest.raises(err, match=match):
        Learner(**args)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_bad_epochs(dls, mlp, epochs):
    learn = Learner(mlp(), dls, progress="silent")
    with pytest.raises(ValueError, match="epochs"):
        learn.fit(epochs)
    with pytest.raises(ValueError, match="epochs"):
        learn.fit_one_cycle(epochs)


def test_bad_validation_batch_and_nan_in_lr_find(mlp):
    short = (np.ones((4, 8)), [0, 1, 2])
    learn = Learner(mlp(), (batches(GOOD), batches(short)), progress="silent")
    with pytest.raises(ValueError, match="y: batch 0 of the validation data has 3 labels"):
        learn.fit(1)
    x = np.full((4, 8), np.inf)
    learn = Learner(mlp(), (batches(GOOD, (x, [0, 1, 2, 0])), None), progress="silent")
    with pytest.raises(ValueError, match="x: batch 1 of the training data in lr_find pass 0"):
        learn.lr_find()
    assert learn.opt is None  # state restored even when the sweep raises


def test_public_step_api_drives_the_loop_like_fit(dls, mlp, blobs):
    """prepare / n_groups / set_hypers / one_batch are the steps fit takes (lr_find uses them)."""
    x, y = blobs()
    fitted = Learner(mlp(), dls, progress="silent", seed=3)
    fitted.fit(1, 0.05)
    data = DataLoaders.from_tensors(x[:320], y[:320], x[320:], y[320:], bs=32)
    by_hand = Learner(mlp(), data, progress="silent", seed=3)
    by_hand.prepare()
    assert by_hand.n_groups == 1 and by_hand.opt is not None
    by_hand.set_hypers(np.full(by_hand.n_groups, 0.05), 0.9)
    losses = [
        by_hand.one_batch(xb, yb, f"batch {i}") for i, (xb, yb) in enumerate(by_hand.dls.train)
    ]
    assert losses == fitted.recorder.history.batch_losses
    for a, b in zip(fitted.model.parameters(), by_hand.model.parameters(), strict=True):
        assert torch.equal(a, b)

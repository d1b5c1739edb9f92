"""Diagnostics: each finding on a hand-written history that triggers it and one that does not,
then real tiny runs with the learning rate too high and too low."""

import functools
import warnings

import pytest
import torch
from torch import nn

from fastcore_cv.learner import DataLoaders, History, Learner, diagnose, error_rate, set_seed


def codes(h):
    return [f.code for f in diagnose(h)]


HEALTHY = History.from_epochs([1.0, 0.6, 0.4], [0.9, 0.6, 0.5], {"error_rate": [0.3, 0.2, 0.15]})


def test_healthy_run_has_no_findings():
    assert codes(HEALTHY) == []


@pytest.mark.parametrize(
    "history, epoch",
    [
        (History.from_epochs([1.0, 0.8], [0.9, 0.7], diverged=True), 1),
        (History.from_epochs([1.0, float("nan")], [0.9, float("nan")]), 1),
        (History.from_epochs([1.0, 0.8], [0.9, float("inf")]), 1),
        (History.from_epochs([1.0], [0.9], batch_losses=[1.0, 1.2, 1.6, 2.5, 3.0]), None),
        (History.from_epochs([1.0, 0.9, 0.95], [0.8, 2.0, 5.0]), 0),  # valid loss explodes
    ],
)
def test_lr_too_high_triggers(history, epoch):
    (finding,) = diagnose(history)
    assert finding.code == "lr_too_high" and finding.epoch == epoch
    assert (
        "learning rate is too high" in finding.message
        or "too high a learning rate" in finding.message
    )


def test_overfitting_is_not_mistaken_for_lr_too_high():
    # valid loss triples, but training loss keeps falling: that is overfitting
    h = History.from_epochs([0.9, 0.5, 0.2, 0.1, 0.05], [0.5, 0.3, 0.4, 0.7, 1.0])
    assert codes(h) == ["too_many_epochs"]


def test_lr_too_low_triggers_and_explains_train_above_valid():
    h = History.from_epochs(
        [1.09, 1.08], [1.07, 1.07], batch_losses=list(torch.linspace(1.10, 1.08, 20))
    )
    (finding,) = diagnose(h)  # no separate too_few_epochs / train_above_valid
    assert finding.code == "lr_too_low" and "barely moved" in finding.message
    assert "too low" in finding.message


def test_small_movement_of_a_model_that_fits_is_not_lr_too_low():
    h = History.from_epochs([0.21, 0.2], [0.5, 0.5], batch_losses=[0.21] * 10 + [0.2] * 10)
    assert "lr_too_low" not in codes(h)


def test_too_few_epochs_triggers():
    h = History.from_epochs([1.0, 0.7, 0.5], [0.8, 0.55, 0.42])
    (finding,) = diagnose(h)
    assert finding.code == "too_few_epochs" and "still falling" in finding.message


def test_too_few_epochs_reads_batches_in_a_single_epoch():
    falling = [1.0 - 0.02 * i for i in range(20)]
    h = History.from_epochs([0.8], [0.6], batch_losses=falling)
    assert codes(h) == ["one_epoch", "too_few_epochs"]
    flat = [1.0 - 0.1 * min(i, 5) for i in range(20)]  # fell, then levelled off
    # one epoch shows no trend: 'one_epoch' says so instead of 'train_above_valid'
    assert codes(History.from_epochs([0.8], [0.6], batch_losses=flat)) == ["one_epoch"]


@pytest.mark.parametrize(
    "metrics",
    [
        {"error_rate": [0.3, 0.15, 0.10, 0.13, 0.16]},
        {"accuracy": [0.7, 0.85, 0.90, 0.87, 0.84]},
        {},  # no error metric: read the validation loss
    ],
)
def test_too_many_epochs_names_the_best_epoch(metrics):
    h = History.from_epochs([0.9, 0.5, 0.3, 0.2, 0.1], [0.7, 0.45, 0.4, 0.5, 0.6], metrics)
    (finding,) = diagnose(h)
    assert finding.code == "too_many_epochs" and finding.epoch == 2
    assert "best at epoch 2" in finding.message and "Train for 3 epoch(s)" in finding.message


def test_error_wobble_with_falling_valid_loss_is_not_overfitting():
    # one item in 120 is 0.008: the error moved by noise while the valid loss kept improving
    h = History.from_epochs([0.9, 0.5, 0.3], [0.7, 0.5, 0.45], {"error_rate": [0.3, 0.10, 0.117]})
    assert codes(h) == []
    small_rise = History.from_epochs([0.9, 0.5, 0.3], [0.7, 0.5, 0.51])  # 2% < 5%
    assert codes(small_rise) == []


def test_train_above_valid_triggers_when_not_still_falling():
    h = History.from_epochs([1.0, 0.5, 0.45, 0.45], [0.6, 0.4, 0.38, 0.38])
    (finding,) = diagnose(h)
    assert finding.code == "train_above_valid" and "should never be higher" in finding.message


def test_no_validation_triggers_only_without_a_validation_set():
    h = History.from_epochs([1.0, 0.5], [None, None])
    assert codes(h) == ["no_validation"]
    assert "no_validation" not in codes(HEALTHY)


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="history: nothing recorded"):
        diagnose(History())


def test_findings_print_as_code_and_message():
    (finding,) = diagnose(History.from_epochs([1.0, 0.7, 0.5], [0.8, 0.55, 0.42]))
    assert str(finding).startswith("[too_few_epochs] The training loss")


# -- real tiny runs ----------------------------------------------------------------------------


# The real runs' LRs were chosen for SGD with momentum 0.9 (the Learner's default until it
# became AdamW, whose step is bounded by the LR: lr=100 no longer overflows to inf).
SGD_MOMENTUM = functools.partial(torch.optim.SGD, momentum=0.9)


def run(dls, mlp, lr, epochs=3, **kw):
    kw.setdefault("opt_func", SGD_MOMENTUM)
    learn = Learner(mlp(), dls, metrics=[error_rate], progress="silent", seed=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        learn.fit(epochs, lr)
    return learn


@pytest.mark.parametrize("lr", [1e4, 100])  # NaN within the first epoch; inf in the second
def test_real_run_lr_far_too_high_diverges(dls, mlp, lr):
    learn = run(dls, mlp, lr)
    assert learn.recorder.history.diverged
    assert [f.code for f in learn.diagnose()] == ["lr_too_high"]


def test_real_run_lr_too_high_explodes_without_nan(dls, mlp):
    learn = run(dls, mlp, 3.0)
    assert not learn.recorder.history.diverged  # finite but exploding
    assert [f.code for f in learn.diagnose()] == ["lr_too_high"]


def test_real_regression_run_explodes():
    set_seed(0)
    x = torch.randn(200, 4)
    y = x @ torch.randn(4, 1)
    dls = DataLoaders.from_tensors(x[:160], y[:160], x[160:], y[160:], bs=16)
    learn = Learner(
        nn.Linear(4, 1), dls, loss_func=nn.MSELoss(), opt_func=SGD_MOMENTUM, progress="silent"
    )
    learn.fit(2, 1.0)
    assert [f.code for f in learn.diagnose()] == ["lr_too_high"]


@pytest.mark.parametrize("lr", [1e-5, 1e-4])
def test_real_run_lr_too_low(dls, mlp, lr):
    assert [f.code for f in run(dls, mlp, lr).diagnose()] == ["lr_too_low"]


def test_real_run_with_a_good_lr_is_neither(dls, mlp):
    learn = Learner(mlp(), dls, metrics=[error_rate], progress="silent", seed=0)
    learn.fit_one_cycle(3, 0.1)
    assert not {"lr_too_high", "lr_too_low"} & {f.code for f in learn.diagnose()}


def test_lr_too_high_when_valid_loss_ends_far_above_the_untrained_model():
    # The loss jumped to hundreds, then fell back, but the model ends worse than untrained.
    batches = [2.3, 400.0, 90.0, 40.0, 30.0, 25.0, 24.0, 23.0]
    h = History.from_epochs([300.0, 27.0, 23.0], [21.8, 21.3, 17.5], batch_losses=batches)
    (finding,) = diagnose(h)
    assert finding.code == "lr_too_high" and "worse than random" in finding.message
    assert finding.evidence["untrained_loss"] == 2.3


def test_valid_loss_below_three_times_the_untrained_loss_is_not_an_explosion():
    batches = [2.3, 2.0, 1.6, 1.2, 1.0, 0.9, 0.8, 0.7]
    h = History.from_epochs([1.5, 0.8], [1.2, 0.9], batch_losses=batches)
    assert "lr_too_high" not in codes(h)


def test_lr_too_low_says_higher_when_the_loss_crept_up():
    h = History.from_epochs(
        [2.309, 2.3088, 2.3086], [2.313, 2.3128, 2.3126], batch_losses=[2.308] * 5 + [2.312] * 5
    )
    (finding,) = diagnose(h)
    assert finding.code == "lr_too_low" and "0.2% higher" in finding.message


# -- like with like: the eval-mode training loss, one epoch, the numbers behind each finding ---


def test_train_above_valid_reads_the_eval_mode_training_loss():
    # the demo's case: the running mean (train mode, dropout on) sits above the valid loss,
    # but measured like the valid loss the training loss is below it: nothing to report
    demo = History.from_epochs(
        [0.30, 0.12, 0.061], [0.05, 0.025, 0.019], train_eval=[0.04, 0.012, 0.004]
    )
    assert codes(demo) == []
    assert codes(History.from_epochs([0.30, 0.12, 0.061], [0.05, 0.025, 0.019])) == [
        "too_few_epochs"
    ]  # without the column: the running mean, as before
    under = History.from_epochs([1.0, 0.7, 0.5], [0.8, 0.55, 0.42], train_eval=[0.9, 0.6, 0.45])
    (finding,) = diagnose(under)
    assert finding.code == "too_few_epochs" and finding.evidence["train_loss"] == 0.45
    assert "eval mode" in finding.message and "0.45" in finding.message


def test_one_epoch_says_it_is_too_few_to_judge_with_its_numbers():
    h = History.from_epochs([1.9], [1.2], {"error_rate": [0.71]}, train_eval=[1.25])
    (finding,) = diagnose(h)
    assert finding.code == "one_epoch" and "too few to judge trends" in finding.message
    assert finding.evidence == {"train_loss": 1.25, "valid_loss": 1.2, "error_rate": 0.71}
    assert "0.71" in finding.message and "1.2" in finding.message


def test_a_loss_that_jumps_above_the_untrained_loss_is_lr_too_high():
    # AdamW at 100x a good LR: bounded steps, no NaN, but the loss jumps, then stalls
    batches = [2.31, 2.25, 2.0, 2.9, 3.8, 6.1, 6.7, 7.1, 2.8, 2.4, 2.2, 2.0, 1.9, 1.8, 1.6, 1.5]
    h = History.from_epochs([2.4, 1.6], [1.9, 1.5], batch_losses=batches)
    (finding,) = diagnose(h)
    assert finding.code == "lr_too_high" and finding.evidence["untrained_loss"] == 2.31
    assert finding.evidence["peak_loss"] > 1.3 * 2.31
    one_odd_batch = [2.31, 2.2, 9.0, 2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.9]
    assert "lr_too_high" not in codes(
        History.from_epochs([1.5, 1.0], [1.4, 1.1], batch_losses=one_odd_batch)
    )


@pytest.mark.parametrize(
    "history",
    [
        History.from_epochs([1.0, 0.8], [0.9, 0.7], batch_losses=[1.0, float("nan")]),
        History.from_epochs([1.0, 0.8], [0.9, float("inf")]),
        History.from_epochs([1.0, 0.9, 0.95], [0.8, 2.0, 5.0]),
        History.from_epochs([1.09, 1.08], [1.07, 1.07], batch_losses=[1.1] * 10 + [1.08] * 10),
        History.from_epochs([0.9, 0.5, 0.3, 0.2, 0.1], [0.7, 0.45, 0.4, 0.5, 0.6]),
        History.from_epochs([1.0, 0.5, 0.45, 0.45], [0.6, 0.4, 0.38, 0.38]),
        History.from_epochs([1.0], [0.9]),
    ],
)
def test_every_finding_names_the_numbers_behind_it(history):
    for finding in diagnose(history):
        assert finding.evidence, finding
        assert all(isinstance(v, float) for v in finding.evidence.values()), finding

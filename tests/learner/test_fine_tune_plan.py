"""fine_tune's plan (``plan_fine_tune``): which LR goes where, resolved before training, and
the head's LR never taken from the body's (the CLI prints this plan:
tests/test_train_command.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from fastcore_cv.learner import one_cycle, set_seed
from fastcore_cv.learner.fine_tune import (
    BASE_LR,
    HEAD_STEPS,
    LR_MULT,
    BodyHeadLearner,
    sgd_momentum,
)


class TwoPart(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_learner(dls) -> BodyHeadLearner:
    set_seed(0)
    return BodyHeadLearner(TwoPart(), dls, progress="silent")


def test_a_given_base_lr_does_not_set_the_head_lr(dls):
    """The CLI's old trap: one LR for both (textures: the head's 1e-4 as the body's gave
    18-22% error). The head's LR comes from the sweeps unless head_lr is given."""
    learn = make_learner(dls)
    plan = learn.plan_fine_tune(2, base_lr=0.04)
    found = [r.suggestion for r in learn.lr_find_results]  # the sweeps suggest_lr ran
    assert plan.sweep_suggestions == tuple(found) and plan.head_lr != 0.04
    assert plan.head_lr_source == "median of 5 seeded lr_find sweeps"
    assert len(plan.sweep_suggestions) == 5
    assert plan.head_lr == pytest.approx(float(np.median(plan.sweep_suggestions)))
    assert plan.body_lrs == pytest.approx((0.02 / LR_MULT, 0.02))  # base_lr halved
    assert plan.base_lr_source == "given"


def test_the_default_plan_gives_the_head_its_steps_and_the_body_base_lr(dls):
    learn = make_learner(dls)
    plan = learn.plan_fine_tune(1, head_lr=0.3)
    assert learn.lr_find_results == []  # head_lr given: no sweep
    assert (plan.head_lr, plan.head_lr_source, plan.sweep_suggestions) == (0.3, "given", ())
    assert plan.head_batches == 10 and plan.freeze_epochs == -(-HEAD_STEPS // 10)
    assert plan.head_steps >= HEAD_STEPS and plan.freeze_epochs_from_steps
    assert plan.body_lrs == pytest.approx((BASE_LR / 2 / LR_MULT, BASE_LR / 2))
    text = str(plan)
    assert "head LR 0.3 (given)" in text
    assert f"= {plan.head_steps} head steps (enough for HEAD_STEPS={HEAD_STEPS})" in text
    assert f"slice({BASE_LR / 2 / LR_MULT:.3g}, {BASE_LR / 2:.3g})" in text
    few = learn.plan_fine_tune(1, head_lr=0.3, freeze_epochs=1)  # fastai's one frozen epoch
    assert few.head_steps == 10 and "fewer than HEAD_STEPS" in str(few)


def test_run_plan_trains_as_planned_and_keeps_the_plan(dls):
    learn = make_learner(dls)
    plan = learn.plan_fine_tune(1, head_lr=0.3, freeze_epochs=2)
    learn.run_plan(plan)
    assert learn.fine_tune_plan is plan and len(learn.frozen_history.epochs) == 2
    frozen = learn.frozen_history.batch_lrs
    np.testing.assert_allclose(frozen, one_cycle(len(frozen), 0.3, pct_start=0.99)[0][:, 0])
    assert [g["lr"] for g in learn.opt.param_groups][-1] == pytest.approx(
        learn.recorder.history.batch_lrs[-1]
    )
    # BASE_LR is an SGD figure: fine_tune's learners keep SGD whatever Learner's default.
    assert type(learn.opt) is torch.optim.SGD and learn.opt_func is sgd_momentum


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(head_lr=0.0), "head_lr"),
        (dict(base_lr=-1.0), "base_lr"),
        (dict(lr_mult=float("nan")), "lr_mult"),
        (dict(freeze_epochs=0), "freeze_epochs"),
        (dict(pct_start=2.0), "pct_start"),
    ],
)
def test_bad_plan_arguments_are_named(dls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_learner(dls).plan_fine_tune(1, **kwargs)

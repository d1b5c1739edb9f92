"""fine_tune on any body/head Learner: freezing by requires_grad (BatchNorm in eval mode while
frozen), the frozen stage's LR from the median of seeded sweeps, then everything with
discriminative LRs over the default [body, head] groups."""

import numpy as np
import pytest
import torch
from torch import nn

from fastcore_cv.learner import median_of_sweeps, one_cycle, set_seed
from fastcore_cv.learner.fine_tune import BASE_LR, HEAD_STEPS, BodyHeadLearner


class TwoPart(nn.Module):
    """The smallest body/head model with a BatchNorm in its body: head(body(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_learner(dls, **kwargs) -> BodyHeadLearner:
    set_seed(0)
    return BodyHeadLearner(TwoPart(), dls, progress="silent", **kwargs)


def test_starts_frozen_and_the_frozen_stage_leaves_the_body_alone(dls):
    learn = make_learner(dls)
    assert learn.frozen and not any(p.requires_grad for p in learn.model.body.parameters())
    body = {k: v.clone() for k, v in learn.model.body.state_dict().items()}
    head = {k: v.clone() for k, v in learn.model.head.state_dict().items()}
    learn.fit(1, 0.1)
    # Weights and BatchNorm running statistics alike: frozen BatchNorm runs in eval mode.
    assert all(torch.equal(v, body[k]) for k, v in learn.model.body.state_dict().items())
    assert not learn.model.body[1]._forward_pre_hooks  # eval only during the fit
    assert not all(torch.equal(v, head[k]) for k, v in learn.model.head.state_dict().items())
    learn.unfreeze()
    assert not learn.frozen and all(p.requires_grad for p in learn.model.parameters())
    assert learn.opt is None  # rebuilt over every parameter at the next fit


def test_fine_tune_runs_both_stages_with_the_recipes_lrs(dls):
    learn = make_learner(dls)
    learn.fine_tune(2, base_lr=0.04, freeze_epochs=1, lr_mult=100, head_lr=0.04)
    assert len(learn.frozen_history.epochs) == 1 and len(learn.recorder.history.epochs) == 2
    frozen_lrs, lrs = learn.frozen_history.batch_lrs, learn.recorder.history.batch_lrs
    np.testing.assert_allclose(
        frozen_lrs, one_cycle(len(frozen_lrs), 0.04, pct_start=0.99)[0][:, 0]
    )
    # The recorder logs the head's group; the body's is lr_mult times smaller (the default
    # splitter is [body, head]: with one group lr_mult was silently ignored).
    expected = one_cycle(len(lrs), [0.0002, 0.02], div=5, pct_start=0.3)[0]
    np.testing.assert_allclose(lrs, expected[:, -1])
    group_lrs = [g["lr"] for g in learn.opt.param_groups]
    assert len(group_lrs) == 2 and group_lrs[0] / group_lrs[1] == pytest.approx(1 / 100)
    assert not learn.frozen


def test_fine_tune_without_lrs_uses_the_median_sweep_and_head_steps(dls):
    learn = make_learner(dls)
    learn.fine_tune(1)
    want, _ = median_of_sweeps(make_learner(dls))
    assert len(learn.lr_find_results) == 5
    frozen_lrs = learn.frozen_history.batch_lrs
    np.testing.assert_allclose(
        frozen_lrs, one_cycle(len(frozen_lrs), want, pct_start=0.99)[0][:, 0]
    )
    assert len(learn.frozen_history.batch_lrs) == -(-HEAD_STEPS // 10) * 10  # 10 batches/epoch
    assert max(learn.recorder.history.batch_lrs) == pytest.approx(BASE_LR / 2, rel=0.01)


def test_a_model_without_body_and_head_is_refused_by_name(dls, mlp):
    with pytest.raises(TypeError, match=r"model: Sequential has no `\.body`"):
        BodyHeadLearner(mlp(), dls)


def test_the_unfrozen_stage_trains_the_body_batchnorm(dls):
    learn = make_learner(dls)
    learn.unfreeze()
    before = learn.model.body[1].running_mean.clone()
    learn.fit(1, 0.1)
    assert not torch.equal(learn.model.body[1].running_mean, before)


def test_the_default_splitter_is_body_then_head(dls):
    learn = make_learner(dls)
    body, head = learn.splitter(learn.model)
    assert body == list(learn.model.body.parameters())
    assert head == list(learn.model.head.parameters())

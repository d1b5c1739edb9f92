"""The teaching switch: one model on torch's layers or on the kernels, same numbers."""

import numpy as np
import pytest
import torch
from torch import nn

from fastcore_cv import nn as fnn
from fastcore_cv.backend import FusedAway, kernel_loss, to_kernels, to_torch
from fastcore_cv.learner import DataLoaders, Learner, compare_backends, error_rate
from fastcore_cv.optim import AdamW


def mlp():
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def test_to_kernels_keeps_parameters_and_state_dict_and_fuses_linear_relu():
    torch.manual_seed(0)
    model = mlp()
    params = list(model.parameters())
    keys = model.state_dict().keys()
    x = torch.randn(5, 8)
    before = model(x)
    to_kernels(model)
    assert isinstance(model[0], fnn.LinearReLU) and isinstance(model[1], FusedAway)
    assert type(model[2]) is fnn.Linear
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert model.state_dict().keys() == keys
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    to_torch(model)
    assert type(model[0]) is nn.Linear and type(model[1]) is nn.ReLU
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_to_torch_keeps_the_relu_of_a_linear_relu_built_directly():
    """A LinearReLU with no FusedAway after it carries its own ReLU: to_torch must keep it."""
    torch.manual_seed(0)
    model = nn.Sequential(fnn.LinearReLU(8, 16), fnn.Linear(16, 3))
    x = torch.randn(32, 8)
    before = model(x)
    keys = model.state_dict().keys()
    to_torch(model)
    assert not any(isinstance(m, fnn.Linear) for m in model.modules())
    assert model.state_dict().keys() == keys
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    hidden = model[0](x)
    assert (hidden >= 0).all() and (hidden == 0).any()


def test_to_kernels_reaches_nested_modules_and_leaves_others_alone():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
            self.head = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 2))

    net = to_kernels(Net())
    assert type(net.body[0]) is nn.Conv2d
    assert type(net.head[0]) is fnn.Linear  # no fusion: Tanh is not ReLU
    assert type(net.head[2]) is fnn.Linear


def test_kernel_loss_copies_every_setting():
    loss = kernel_loss(nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.2))
    assert isinstance(loss, fnn.CrossEntropyLoss)
    assert loss.reduction == "sum" and loss.label_smoothing == 0.2
    other = nn.MSELoss()
    assert kernel_loss(other) is other


def test_learner_backend_numba_swaps_layers_loss_and_optimizer():
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    learn = Learner(mlp(), DataLoaders.from_tensors(x, y, bs=8), backend="numba", progress="silent")
    learn.fit(1, 0.1)
    assert isinstance(learn.model[0], fnn.LinearReLU)
    assert isinstance(learn.loss_func, fnn.CrossEntropyLoss)
    assert type(learn.opt) is AdamW  # the default AdamW's kernel twin


def test_learner_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend: expected one of"):
        Learner(mlp(), DataLoaders.from_tensors(torch.randn(4, 8), torch.zeros(4)), backend="jax")


def test_compare_backends_same_seed_same_trajectory():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    result = compare_backends(
        mlp,
        lambda: DataLoaders.from_tensors(x[:64], y[:64], x[64:], y[64:], bs=16, shuffle=True),
        epochs=3,
        lr=0.1,
        metrics=(error_rate,),
    )
    assert len(result.torch.batch_losses) == len(result.numba.batch_losses) == 12
    # Same maths in float32; the kernels sum in another order: a few ulps per step.
    assert result.max_loss_diff < 1e-4
    assert result.torch.metrics["error_rate"] == pytest.approx(result.numba.metrics["error_rate"])
    assert "numba backend" in result.table()

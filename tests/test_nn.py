"""The torch drop-ins: same numbers and gradients as torch, torch's path where kernels don't apply."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv import nn as fnn

SHAPES = st.tuples(st.integers(1, 9), st.integers(1, 13), st.integers(1, 11))


@settings(max_examples=25, deadline=None)
@given(shape=SHAPES, relu=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_gradcheck_float64(shape, relu, bias, seed):
    n, fan_in, fan_out = shape
    torch.manual_seed(seed)
    layer = (fnn.LinearReLU if relu else fnn.Linear)(fan_in, fan_out, bias=bias).double()
    x = torch.randn(n, fan_in, dtype=torch.float64, requires_grad=True)
    # Nudge pre-activations off zero: ReLU is not differentiable there, gradcheck would flake.
    with torch.no_grad():
        pre = torch.nn.functional.linear(x, layer.weight, layer.bias)
        x.add_(0.01 * (pre.abs() < 1e-3).any(1, keepdim=True).double())
    assert torch.autograd.gradcheck(layer, (x,))


@settings(max_examples=25, deadline=None)
@given(shape=SHAPES, relu=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_matches_torch_linear_float32(shape, relu, seed):
    n, fan_in, fan_out = shape
    torch.manual_seed(seed)
    ours = (fnn.LinearReLU if relu else fnn.Linear)(fan_in, fan_out)
    ref = torch.nn.Linear(fan_in, fan_out)
    ref.load_state_dict(ours.state_dict())
    x1 = torch.randn(2, n, fan_in, requires_grad=True)  # extra leading dim, as nn.Linear allows
    x2 = x1.detach().clone().requires_grad_()
    y1 = ours(x1)
    y2 = torch.relu(ref(x2)) if relu else ref(x2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    # float32, sums of <= 13 products of O(1) values: 1e-5 absolute is ~100 ulps of slack.
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)


def test_linear_is_a_drop_in_for_nn_linear():
    torch.manual_seed(0)
    ours = fnn.Linear(4, 3, bias=False)
    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 3, bias=False)
    assert isinstance(ours, torch.nn.Linear)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    torch.testing.assert_close(ours.weight, ref.weight)  # same init from the same seed
    assert ours.bias is None


def test_linear_falls_back_to_torch_for_dtypes_the_kernels_lack():
    layer = fnn.Linear(4, 2).to(torch.bfloat16)
    out = layer(torch.ones(3, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (3, 2)


def test_linear_wrong_input_width_raises_torch_error():
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        fnn.Linear(4, 2)(torch.ones(3, 5))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch_and_passes_gradcheck(reduction, smoothing):
    torch.manual_seed(1)
    logits = (torch.randn(7, 5, dtype=torch.float64) * 3).requires_grad_()
    target = torch.randint(0, 5, (7,))
    ours = fnn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    ref = torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    torch.testing.assert_close(ours(logits, target), ref(logits, target))
    assert torch.autograd.gradcheck(lambda lg: ours(lg, target), (logits,))


def test_cross_entropy_takes_torch_path_for_ignore_index_and_weights():
    logits = torch.randn(4, 3)
    target = torch.tensor([0, -100, 2, 1])
    torch.testing.assert_close(
        fnn.CrossEntropyLoss()(logits, target), torch.nn.CrossEntropyLoss()(logits, target)
    )
    w = torch.tensor([1.0, 2.0, 0.5])
    target = torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(
        fnn.CrossEntropyLoss(weight=w)(logits, target),
        torch.nn.CrossEntropyLoss(weight=w)(logits, target),
    )


def test_cross_entropy_out_of_range_target_names_targets():
    with pytest.raises(ValueError, match="targets: class index 3 out of range"):
        fnn.CrossEntropyLoss()(torch.randn(2, 3), torch.tensor([0, 3]))


def test_as_numpy_shares_memory_with_contiguous_tensors():
    t = torch.arange(6.0).reshape(2, 3)
    assert np.shares_memory(fnn.as_numpy(t), t.numpy())

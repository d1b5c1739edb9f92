"""The torch drop-ins: same numbers and gradients as torch; torch's path where kernels can't run."""

import copy
import subprocess
import sys

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


# -- KernelSequential: runs of kernel layers as one autograd Function ------------------------


def _stack(depth, relu, bias, dtype=torch.float32, seed=0):
    """A torch MLP and its to_kernels twin with the same parameters' values."""
    from fastcore_cv.backend import to_kernels

    torch.manual_seed(seed)
    widths = [5, 7, 4, 3, 6][: depth + 1]
    layers = []
    for i in range(depth):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1], bias=bias))
        if relu and i < depth - 1:
            layers.append(torch.nn.ReLU())
    ref = torch.nn.Sequential(*layers).to(dtype)
    ours = to_kernels(torch.nn.Sequential(*[copy.deepcopy(m) for m in ref]))
    return ours, ref


@settings(max_examples=30, deadline=None)
@given(
    depth=st.integers(2, 4),
    relu=st.booleans(),
    bias=st.booleans(),
    n=st.integers(1, 9),
    x_grad=st.booleans(),
    freeze_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_stack_matches_torch_sequential(depth, relu, bias, n, x_grad, freeze_first, seed):
    ours, ref = _stack(depth, relu, bias, seed=seed)
    assert type(ours) is fnn.KernelSequential
    if freeze_first:  # a frozen layer: no weight gradient, the input gradient still flows
        for model in (ours, ref):
            model[0].weight.requires_grad_(False)
    x1 = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), requires_grad=x_grad)
    x2 = x1.detach().clone().requires_grad_(x_grad)
    y1, y2 = ours(x1), ref(x2)
    assert y1.grad_fn is not None and "StackFunction" in type(y1.grad_fn).__name__
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    # float32 sums of <= 7 products of O(1) values through <= 4 layers.
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    if x_grad:
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None)
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_stack_gradcheck_float64(relu):
    ours, _ = _stack(3, relu, True, dtype=torch.float64, seed=3)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))


def test_stack_falls_back_to_layer_by_layer_with_hooks_or_other_inputs():
    ours, ref = _stack(2, True, True)
    x = torch.randn(3, 5)
    seen = []
    handle = ours[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    out = ours(x)
    assert seen == [(3, 7)] and "StackFunction" not in type(out.grad_fn).__name__
    handle.remove()
    torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)
    assert "StackFunction" in type(ours(x).grad_fn).__name__
    batched = torch.randn(2, 3, 5)  # 3-D input: the layers' own reshaping path
    torch.testing.assert_close(ours(batched), ref(batched), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        ours(torch.randn(3, 6))


def test_stack_follows_changes_to_the_sequential():
    ours, ref = _stack(2, False, True)
    x = torch.randn(4, 5)
    ours.append(fnn.Linear(4, 2))
    ref.append(torch.nn.Linear(4, 2))
    ref[-1].load_state_dict(ours[-1].state_dict())
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_saved_input_modified_in_place_raises_like_torch():
    ours, _ = _stack(2, True, True)
    x = torch.randn(3, 5, requires_grad=True)
    y = ours(x)
    with torch.no_grad():
        ours[0].weight.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# -- gradients written straight into the optimizer's flat buffer ----------------------------


def test_gradients_land_in_the_flat_buffer_without_copies():
    from fastcore_cv.optim import SGD

    ours, ref = _stack(2, True, True)
    opt = SGD(ours.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    loss = fnn.CrossEntropyLoss()
    for step in range(3):
        opt.zero_grad()
        ref_opt.zero_grad()
        assert all(p.grad is None for p in ours.parameters())  # torch's set_to_none
        loss(ours(x), y).backward()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        if step > 0:  # the flat group exists from the first step on
            flat = opt._flat[0]
            for p, ptr in zip(ours.parameters(), flat.grad_ptrs, strict=True):
                assert p.grad.data_ptr() == ptr  # written in place, adopted by autograd
        opt.step()
        ref_opt.step()
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_linear_backward_with_an_output_buffer_is_used_when_available(monkeypatch):
    """With linear_backward(..., grad_w_out=...) the weight gradient is written in place."""
    from fastcore_cv.backend import to_torch
    from fastcore_cv.optim import SGD

    calls = []
    plain = fnn.linear_backward

    def linear_backward(*args, grad_w_out=None, **kwargs):
        grad_x, grad_w, grad_b = plain(*args, **kwargs)
        calls.append(grad_w_out is not None)
        if grad_w_out is not None:
            np.copyto(grad_w_out, grad_w)
            grad_w = grad_w_out
        return grad_x, grad_w, grad_b

    monkeypatch.setattr(fnn, "linear_backward", linear_backward)
    monkeypatch.setattr(fnn, "_GRAD_W_OUT", True)
    ours, _ = _stack(2, True, True)
    opt = SGD(ours.parameters(), lr=0.1)
    x = torch.randn(4, 5)
    for _ in range(2):
        opt.zero_grad()
        ours(x).sum().backward()
        opt.step()
    opt.zero_grad()
    ours(x).sum().backward()
    assert calls == [False, False, True, True, True, True]  # a flat buffer from step 1 on
    ref = to_torch(copy.deepcopy(ours))
    ref(x).sum().backward()
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)


# -- cross-entropy details ----------------------------------------------------------------


def test_cross_entropy_backward_twice_accumulates_like_torch():
    """The kernel's gradient buffer is handed over once; a retained graph's second and third
    backward must still add up to 3x the gradient."""
    logits = torch.randn(5, 4, requires_grad=True)
    ref = logits.detach().clone().requires_grad_()
    target = torch.tensor([0, 3, 1, 2, 0])
    loss, ref_loss = (
        fnn.CrossEntropyLoss()(logits, target),
        torch.nn.CrossEntropyLoss()(ref, target),
    )
    for _ in range(3):
        loss.backward(retain_graph=True)
        ref_loss.backward(retain_graph=True)
    torch.testing.assert_close(logits.grad, ref.grad)


def test_cross_entropy_ignore_index_inside_the_class_range_takes_torch_path():
    logits = torch.randn(4, 3)
    target = torch.tensor([0, 1, 2, 1])
    ours = fnn.CrossEntropyLoss(ignore_index=1)
    torch.testing.assert_close(
        ours(logits, target), torch.nn.CrossEntropyLoss(ignore_index=1)(logits, target)
    )


def test_nn_does_not_import_the_optimizer():
    """Imports point down: the layers share only ``fastcore_cv.flat_grad`` with optim.py."""
    code = "import sys, fastcore_cv.nn; print('fastcore_cv.optim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

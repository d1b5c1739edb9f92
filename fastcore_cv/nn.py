"""torch drop-ins whose maths runs in the Numba kernels: ``Linear``, ``LinearReLU`` and
``CrossEntropyLoss``.

Each is a subclass of the torch module it replaces (same parameters, init, state_dict), with
its forward and backward in a ``torch.autograd.Function`` that hands zero-copy NumPy views of
the tensors to the kernels. Inputs the kernels do not cover (not CPU, not float32/float64,
class weights, ignore_index present, probability targets) take torch's own path, so the
drop-in never fails where torch would work.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastcore_cv.kernels.linear import linear, linear_backward
from fastcore_cv.kernels.loss import softmax_cross_entropy
from fastcore_cv.threads import sync_torch

sync_torch()

KERNEL_DTYPES = (torch.float32, torch.float64)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's data (copied only when not contiguous)."""
    return t.detach().contiguous().numpy()


def kernels_can_run(*tensors: torch.Tensor | None) -> bool:
    """True when every given tensor is a CPU float32/float64 tensor of one dtype."""
    given = [t for t in tensors if t is not None]
    dtypes = {t.dtype for t in given}
    return (
        len(dtypes) == 1
        and dtypes.pop() in KERNEL_DTYPES
        and all(t.device.type == "cpu" for t in given)
    )


class LinearFunction(torch.autograd.Function):
    """activation(x @ weight.T + bias) forward and backward in the kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1])
        b = None if bias is None else as_numpy(bias)
        out = torch.from_numpy(linear(as_numpy(x2), as_numpy(weight), b, activation))
        ctx.save_for_backward(x2, weight, out if activation else None)
        ctx.activation, ctx.x_shape, ctx.has_bias = activation, x.shape, bias is not None
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x2, weight, out = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x, grad_w, grad_b = linear_backward(
            as_numpy(x2),
            as_numpy(weight),
            as_numpy(g),
            activation=ctx.activation,
            out=None if out is None else as_numpy(out),
            need_grad_x=ctx.needs_input_grad[0],
        )
        gx = None if grad_x is None else torch.from_numpy(grad_x).reshape(ctx.x_shape)
        gb = torch.from_numpy(grad_b) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, torch.from_numpy(grad_w), gb, None


class Linear(nn.Linear):
    """Drop-in for ``torch.nn.Linear`` (same parameters, init and state_dict) on the kernels."""

    activation: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features or x.numel() == 0:
            return self._torch_forward(x)  # torch raises its own shape error / handles empty
        if not kernels_can_run(x, self.weight, self.bias):
            return self._torch_forward(x)
        return LinearFunction.apply(x, self.weight, self.bias, self.activation)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return torch.relu(out) if self.activation == "relu" else out


class LinearReLU(Linear):
    """``relu(Linear(x))`` with the bias and ReLU fused into the kernel's output pass."""

    activation = "relu"


class CrossEntropyFunction(torch.autograd.Function):
    """Fused softmax cross-entropy: loss and d(loss)/d(logits) in one kernel pass."""

    @staticmethod
    def forward(ctx, logits, target, reduction, label_smoothing):  # type: ignore[override]
        loss, grad = softmax_cross_entropy(
            as_numpy(logits), target.numpy(), reduction, label_smoothing
        )
        ctx.save_for_backward(torch.from_numpy(grad))
        ctx.reduction = reduction
        return torch.as_tensor(loss, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        scale = grad_loss[:, None] if ctx.reduction == "none" else grad_loss
        return grad * scale, None, None, None


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Drop-in for ``torch.nn.CrossEntropyLoss`` on the fused softmax-cross-entropy kernel."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._kernel_applies(input, target):
            return CrossEntropyFunction.apply(
                input, target, self.reduction, float(self.label_smoothing)
            )
        return super().forward(input, target)

    def _kernel_applies(self, input: torch.Tensor, target: torch.Tensor) -> bool:
        return (
            self.weight is None
            and input.ndim == 2
            and input.shape[0] > 0
            and target.ndim == 1
            and not target.is_floating_point()
            and target.device.type == "cpu"
            and kernels_can_run(input)
            and not bool((target == self.ignore_index).any())
        )

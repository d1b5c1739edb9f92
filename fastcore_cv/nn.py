"""torch drop-ins whose maths runs in the Numba kernels: ``Linear``, ``LinearReLU`` and
``CrossEntropyLoss``.

Each is a subclass of the torch module it replaces (same parameters, init, state_dict), with
its forward and backward in a ``torch.autograd.Function`` that hands zero-copy NumPy views of
the tensors to the kernels. Inputs the kernels do not cover (not CPU, not float32/float64,
class weights, ignore_index present, probability targets) take torch's own path, so the
drop-in never fails where torch would work.

The hot path is kept lean on purpose: for the lesson's MLP (784-256-10, batch 64) the Python
around the kernels cost as much as the kernels themselves (bench/RESULTS.md "train step").
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastcore_cv.flat_grad import KERNEL_DTYPES, flat_grad_view
from fastcore_cv.kernels.linear import linear, linear_backward
from fastcore_cv.kernels.loss import softmax_cross_entropy
from fastcore_cv.threads import sync_torch

sync_torch()

# linear_backward may write the weight gradient straight into a buffer (the optimizer's flat
# gradient view); without that argument the result is copied there.
_GRAD_W_OUT = "grad_w_out" in inspect.signature(linear_backward).parameters


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's data (copied only when not contiguous)."""
    return t.detach().contiguous().numpy()


class LinearFunction(torch.autograd.Function):
    """activation(x @ weight.T + bias) for a 2-D x, forward and backward in the kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):  # type: ignore[override]
        xn, wn = x.detach().numpy(), weight.detach().numpy()
        out = linear(xn, wn, None if bias is None else bias.detach().numpy(), activation)
        out_t = torch.from_numpy(out)
        # save_for_backward keeps torch's checks (a saved tensor modified in place raises);
        # the NumPy views are kept too, as converting them again cost 7 us per layer.
        ctx.save_for_backward(x, weight, bias, out_t if activation else None)
        ctx.arrays = (xn, wn, out if activation else None)
        ctx.activation = activation
        return out_t

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        _, weight, bias, _ = ctx.saved_tensors
        xn, wn, out = ctx.arrays
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x, gw, gb = _layer_backward(
            xn,
            wn,
            out,
            ctx.activation,
            grad_out.detach().numpy(),
            weight,
            bias,
            need_x,
            need_w,
            need_b,
        )
        return None if grad_x is None else torch.from_numpy(grad_x), gw, gb, None


def _layer_backward(xn, wn, out, activation, g, weight, bias, need_x, need_w, need_b):
    """One layer's kernels backward; weight and bias gradients as tensors, written into the
    optimizer's flat gradient buffer when it has a place for them (``flat_grad_view``)."""
    w_dest = flat_grad_view(weight) if need_w else None
    extra = {"grad_w_out": w_dest[1]} if _GRAD_W_OUT and w_dest is not None else {}
    grad_x, grad_w, grad_b = linear_backward(
        xn, wn, g, activation=activation, out=out, need_grad_x=need_x, **extra
    )
    if w_dest is None:
        gw = torch.from_numpy(grad_w) if need_w else None
    else:
        gw = w_dest[0]
        if not extra:
            np.copyto(w_dest[1], grad_w)
    b_dest = flat_grad_view(bias) if need_b else None
    if b_dest is None:
        gb = torch.from_numpy(grad_b) if need_b else None
    else:
        gb = b_dest[0]
        np.copyto(b_dest[1], grad_b)
    return grad_x, gw, gb


class StackFunction(torch.autograd.Function):
    """Several Linear(+ReLU) layers in a row as ONE autograd Function: one Python forward and
    one backward node for the whole run instead of one per layer (each cost ~20 us of
    autograd bookkeeping per step: bench/RESULTS.md "train step")."""

    @staticmethod
    def forward(ctx, x, activations, *params):  # type: ignore[override]
        arrays, weights = [x.detach().numpy()], []
        for i, activation in enumerate(activations):
            w, b = params[2 * i], params[2 * i + 1]
            weights.append(w.detach().numpy())
            b = None if b is None else b.detach().numpy()
            arrays.append(linear(arrays[-1], weights[-1], b, activation))
        ctx.save_for_backward(x, *params)  # torch's check that none was modified in place
        ctx.arrays, ctx.weights, ctx.activations = arrays, weights, activations
        return torch.from_numpy(arrays[-1])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        arrays, activations = ctx.arrays, ctx.activations
        grads: list = [None] * (len(saved) - 1)
        g = grad_out.detach().numpy()
        for i in reversed(range(len(activations))):
            activation = activations[i]
            need_x = any(needs[: 2 + 2 * i])  # x or an earlier layer's parameter
            g, grads[2 * i], grads[2 * i + 1] = _layer_backward(
                arrays[i],
                ctx.weights[i],
                arrays[i + 1] if activation else None,
                activation,
                g,
                saved[1 + 2 * i],
                saved[2 + 2 * i],
                need_x,
                needs[2 + 2 * i],
                needs[3 + 2 * i],
            )
            if g is None:
                break
        gx = torch.from_numpy(g) if needs[0] and g is not None else None
        return gx, None, *grads


class Linear(nn.Linear):
    """Drop-in for ``torch.nn.Linear`` (same parameters, init and state_dict) on the kernels."""

    activation: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        dtype = w.dtype
        if not (
            x.dtype is dtype
            and dtype in KERNEL_DTYPES
            and (b is None or b.dtype is dtype)
            and x.ndim >= 1
            and x.shape[-1] == self.in_features
            and x.numel() > 0
            and x.is_cpu
            and w.is_cpu
            and (b is None or b.is_cpu)
        ):
            return self._torch_forward(x)  # torch raises its own shape error / handles empty
        if x.ndim == 2:
            return LinearFunction.apply(x, w, b, self.activation)
        out = LinearFunction.apply(x.reshape(-1, x.shape[-1]), w, b, self.activation)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return torch.relu(out) if self.activation == "relu" else out


class LinearReLU(Linear):
    """``relu(Linear(x))`` with the bias and ReLU fused into the kernel's output pass."""

    activation = "relu"


class Fused(nn.Identity):
    """Base of the placeholders left where a module was fused into the kernel layer before
    it (fastcore_cv.backend.FusedAway, for a ReLU fused into LinearReLU)."""


def _hooked(m: nn.Module) -> bool:
    return bool(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
    )


def _global_hooks() -> bool:
    g = torch.nn.modules.module
    return bool(
        g._global_forward_hooks
        or g._global_forward_pre_hooks
        or g._global_backward_hooks
        or g._global_backward_pre_hooks
    )


class KernelSequential(nn.Sequential):
    """``nn.Sequential`` that runs each run of two or more kernel Linear layers (with the
    ``Fused`` placeholders between them) through ONE autograd Function.

    Same children, parameters and state_dict as the Sequential it replaces; a layer with
    hooks, or an input the kernels do not take, is run module by module as before. The
    grouping is cached per list of children (recomputing it cost 20 us per call).
    """

    def forward(self, x):  # type: ignore[override]
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return super().forward(x)  # exporters trace plain module calls
        modules = tuple(self._modules.values())
        plan = self.__dict__.get("_kernel_plan")
        if plan is None or plan[0] != modules:
            plan = self.__dict__["_kernel_plan"] = (modules, _plan(modules))
        if _global_hooks():
            return super().forward(x)
        for item in plan[1]:
            x = _run_stack(item, x) if type(item) is tuple else item(x)
        return x


def _plan(modules: tuple) -> list:
    """Group runs of >= 2 kernel Linear layers (``Fused`` placeholders skipped) into tuples."""
    plan: list = []
    run: list = []
    for m in (*modules, None):
        if isinstance(m, Linear):
            run.append(m)
            continue
        if isinstance(m, Fused) and run:
            run.append(m)
            continue
        layers = [r for r in run if isinstance(r, Linear)]
        if len(layers) >= 2:
            plan.append(tuple(run))
        else:
            plan.extend(run)
        run = []
        if m is not None:
            plan.append(m)
    return plan


def _run_stack(run: tuple, x: torch.Tensor) -> torch.Tensor:
    """The run through StackFunction, or module by module when hooks or inputs forbid it."""
    params: list = []
    acts = []
    dtype = x.dtype
    ok = x.ndim == 2 and x.shape[0] > 0 and dtype in KERNEL_DTYPES and x.is_cpu
    width = x.shape[-1] if x.ndim else -1
    for m in run:
        if _hooked(m):
            ok = False
            break
        if isinstance(m, Fused):
            continue
        w, b = m._parameters["weight"], m._parameters["bias"]
        if not (
            m.in_features == width
            and w.dtype is dtype
            and w.is_cpu
            and (b is None or (b.dtype is dtype and b.is_cpu))
        ):
            ok = False
            break
        width = m.out_features
        params += (w, b)
        acts.append(m.activation)
    if not ok:
        for m in run:
            x = m(x)
        return x
    return StackFunction.apply(x, tuple(acts), *params)


class CrossEntropyFunction(torch.autograd.Function):
    """Fused softmax cross-entropy: loss and d(loss)/d(logits) in one kernel pass."""

    @staticmethod
    def forward(ctx, logits, targets, reduction, label_smoothing):  # type: ignore[override]
        logits_np = logits.detach().numpy()
        loss, grad = softmax_cross_entropy(logits_np, targets, reduction, label_smoothing)
        ctx.grad, ctx.reduction = grad, reduction
        ctx.inputs = (logits_np, targets, reduction, label_smoothing)
        return torch.from_numpy(np.asarray(loss))

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        grad = ctx.grad
        if grad is None:
            # A second backward through a retained graph: the first one handed the kernel's
            # buffer to autograd, which may have accumulated into it since; compute anew.
            grad = softmax_cross_entropy(*ctx.inputs)[1]
        ctx.grad = None
        grad = torch.from_numpy(grad)
        if ctx.reduction == "none":
            return grad * grad_loss[:, None], None, None, None
        if grad_loss.item() == 1.0:  # loss.backward(): hand the buffer over, no multiply
            return grad, None, None, None
        return grad * grad_loss, None, None, None


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Drop-in for ``torch.nn.CrossEntropyLoss`` on the fused softmax-cross-entropy kernel."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (
            self.weight is None
            and input.ndim == 2
            and input.shape[0] > 0
            and target.ndim == 1
            and input.dtype in KERNEL_DTYPES
            and not target.is_floating_point()
            and input.is_cpu
            and target.is_cpu
        ):
            return super().forward(input, target)
        targets = target.numpy()
        ignore = self.ignore_index
        if 0 <= ignore < input.shape[1] and (targets == ignore).any():
            return super().forward(input, target)
        try:
            return CrossEntropyFunction.apply(
                input, targets, self.reduction, float(self.label_smoothing)
            )
        except ValueError:
            # An out-of-range ignore_index entry (default -100) fails the kernel's target
            # check; torch skips those rows. Any other bad target keeps the kernel's error.
            if (targets == ignore).any():
                return super().forward(input, target)
            raise

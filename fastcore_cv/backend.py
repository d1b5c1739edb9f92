"""The teaching switch: run the same torch model on torch's own layers or on the Numba kernels.

``to_kernels(model)`` swaps every ``nn.Linear`` for ``fastcore_cv.nn.Linear`` (a Linear
followed by a ReLU inside an ``nn.Sequential`` becomes one fused ``LinearReLU``), keeping the
very same Parameter objects, so weights, state_dict keys and optimizers stay valid.
``fastcore_cv.learner.compare_backends`` trains one model both ways from one seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastcore_cv import nn as fnn
from fastcore_cv.optim import FASTAI_ADAMW, SGD, Adam, AdamW

BACKENDS = ("torch", "numba")


class FusedAway(fnn.Fused):
    """Stands where a ReLU was before it was fused into the LinearReLU just before it."""


def _kernel_linear(old: nn.Linear, fused_relu: bool) -> fnn.Linear:
    cls = fnn.LinearReLU if fused_relu else fnn.Linear
    new = cls(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
    new.weight, new.bias = old.weight, old.bias  # the same Parameters: no copy, no re-init
    return new.train(old.training)


class TorchLinearReLU(nn.Linear):
    """torch's Linear then ReLU as one module: what a LinearReLU built directly (no FusedAway
    after it) turns back into, keeping its parameter names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def _torch_linear(old: fnn.Linear, keep_relu: bool) -> nn.Linear:
    cls = TorchLinearReLU if keep_relu else nn.Linear
    new = cls(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
    new.weight, new.bias = old.weight, old.bias
    return new.train(old.training)


def to_kernels(model: nn.Module) -> nn.Module:
    """Swap the model's Linear layers (and Linear+ReLU pairs) for kernel-backed ones, in place.

    A plain ``nn.Sequential`` also becomes a ``KernelSequential``, which runs consecutive
    kernel layers as one autograd Function (``to_torch`` turns it back).
    """
    if type(model) is nn.Sequential:
        model.__class__ = fnn.KernelSequential
    for name, child in list(model.named_children()):
        if isinstance(child, fnn.Linear):
            continue
        if type(child) is nn.Linear:
            nxt = _next_sibling(model, name)
            fuse = isinstance(model, nn.Sequential) and type(nxt) is nn.ReLU
            setattr(model, name, _kernel_linear(child, fuse))
            if fuse:
                setattr(model, _next_name(model, name), FusedAway())
        else:
            to_kernels(child)
    return model


def to_torch(model: nn.Module) -> nn.Module:
    """Undo ``to_kernels``: torch's own Linear and ReLU layers again, same Parameters."""
    if type(model) is fnn.KernelSequential:
        model.__class__ = nn.Sequential
    for name, child in list(model.named_children()):
        if isinstance(child, fnn.Linear):
            relu_elsewhere = isinstance(_next_sibling(model, name), FusedAway)
            keep_relu = isinstance(child, fnn.LinearReLU) and not relu_elsewhere
            setattr(model, name, _torch_linear(child, keep_relu))
        elif isinstance(child, FusedAway):
            setattr(model, name, nn.ReLU())
        else:
            to_torch(child)
    return model


def _next_name(model: nn.Module, name: str) -> str | None:
    names = [n for n, _ in model.named_children()]
    i = names.index(name)
    return names[i + 1] if i + 1 < len(names) else None


def _next_sibling(model: nn.Module, name: str) -> nn.Module | None:
    nxt = _next_name(model, name)
    return None if nxt is None else getattr(model, nxt)


def kernel_loss(loss_func: Any) -> Any:
    """The kernel-backed twin of a torch CrossEntropyLoss (anything else is returned as is)."""
    if type(loss_func) is not nn.CrossEntropyLoss:
        return loss_func
    return fnn.CrossEntropyLoss(
        weight=loss_func.weight,
        ignore_index=loss_func.ignore_index,
        reduction=loss_func.reduction,
        label_smoothing=loss_func.label_smoothing,
    )


# torch's optimizers and their flat-buffer kernel twins (same arguments, same state_dict).
KERNEL_OPTIMIZERS: dict[type, type] = {
    torch.optim.SGD: SGD,
    torch.optim.Adam: Adam,
    torch.optim.AdamW: AdamW,
}


def kernel_adamw(params: Any, lr: float) -> torch.optim.Optimizer:
    """The Learner's default optimizer (fastai's AdamW settings) on the flat-buffer kernel."""
    return AdamW(params, lr=lr, **FASTAI_ADAMW)


def kernel_opt_func(opt_func: Callable | None) -> Callable:
    """Map torch's SGD, Adam and AdamW (also inside a functools.partial) onto their
    flat-buffer twins; None (the Learner default, AdamW with fastai's settings) onto
    ``kernel_adamw``; anything else is returned as is."""
    if opt_func is None:
        return kernel_adamw
    if isinstance(opt_func, functools.partial) and opt_func.func in KERNEL_OPTIMIZERS:
        return functools.partial(
            KERNEL_OPTIMIZERS[opt_func.func], *opt_func.args, **opt_func.keywords
        )
    if isinstance(opt_func, type) and opt_func in KERNEL_OPTIMIZERS:
        return KERNEL_OPTIMIZERS[opt_func]
    return opt_func


def check_backend(backend: str) -> str:
    """Raise ValueError naming ``backend`` unless it is 'torch' or 'numba'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    return backend

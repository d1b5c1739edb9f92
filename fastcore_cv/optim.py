"""``SGD``: a drop-in for ``torch.optim.SGD`` that steps each parameter group with ONE kernel
call over a flat buffer.

On the first step a group's parameters, gradients and momentum buffers move into three flat
tensors, and every ``param.data``, ``param.grad`` and ``state['momentum_buffer']`` becomes a
view into them; ``fastcore_cv.kernels.sgd_update`` then updates the whole group in one pass
(measured 1.67x torch's fused SGD over 100 tensors, bench/RESULTS.md "sgd").

Same semantics as torch (lr, momentum, dampening, weight_decay, nesterov, maximize, the
first-step buffer rule, parameters without a gradient skipped, ``zero_grad`` setting grads to
None), same state_dict, works with torch LR schedulers and step hooks. A gradient that
autograd put in a new tensor is copied into the flat buffer at the next step, unless the
layer wrote it there directly (``fastcore_cv.flat_grad``: fastcore_cv.nn.Linear does). Groups
the kernels cannot take (not CPU float32/float64, mixed dtypes, sparse gradients) are stepped by
torch's own implementation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import chain

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer
from torch.optim.sgd import sgd as torch_sgd

from fastcore_cv.flat_grad import KERNEL_DTYPES, register_flat_grad
from fastcore_cv.kernels.sgd import sgd_update
from fastcore_cv.threads import sync_torch

sync_torch()


class FlatGroup:
    """One parameter group's parameters, gradients and momentum in three flat tensors.

    The per-step check that nothing was replaced compares data pointers and object
    identities cached here (a slice per parameter per step cost 40 us for a 4-tensor MLP).
    """

    def __init__(self, params: list[torch.Tensor], state: dict) -> None:
        self.params = params
        self.shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]
        self.offsets = np.zeros(len(params) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        total, dtype = int(self.offsets[-1]), params[0].dtype
        self.data = torch.empty(total, dtype=dtype)
        self.grad = torch.zeros(total, dtype=dtype)
        self.momentum = torch.zeros(total, dtype=dtype)
        self.arrays = (self.data.numpy(), self.grad.numpy(), self.momentum.numpy())
        self.data_views = [self._view(self.data, i) for i in range(len(params))]
        self.grad_views = [self._view(self.grad, i) for i in range(len(params))]
        self.momentum_views = [self._view(self.momentum, i) for i in range(len(params))]
        self.grad_arrays = [v.numpy() for v in self.grad_views]
        self.data_ptrs = [v.data_ptr() for v in self.data_views]
        self.grad_ptrs = [v.data_ptr() for v in self.grad_views]
        self.active = np.zeros(len(params), dtype=np.bool_)
        self.first = np.zeros(len(params), dtype=np.bool_)
        for i, p in enumerate(params):
            self.data_views[i].copy_(p.detach())
            p.data = self.data_views[i]
            if p.grad is not None:
                self.adopt_grad(i)
            buf = state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                self.momentum_views[i].copy_(buf)
                state[p]["momentum_buffer"] = self.momentum_views[i]
            register_flat_grad(p, self, i)

    def _view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return flat[lo:hi].view(self.params[i].shape)

    def adopt_grad(self, i: int) -> None:
        """Copy a gradient torch (or the user) put in a new tensor into the flat buffer."""
        p = self.params[i]
        self.grad_views[i].copy_(p.grad)
        p.grad = self.grad_views[i]

    def sync(self, state: dict) -> list[int]:
        """Re-adopt anything replaced since the last step; fill ``active`` and ``first`` and
        return the indices of parameters whose momentum buffer starts this step."""
        active, first = self.active, self.first
        starting = []
        for i, p in enumerate(self.params):
            if p.data_ptr() != self.data_ptrs[i] or p.shape != self.shapes[i]:
                with torch.no_grad():  # someone assigned p.data
                    self.data_views[i].copy_(p.data)
                p.data = self.data_views[i]
            g = p.grad
            on = active[i] = g is not None
            if on and g.data_ptr() != self.grad_ptrs[i]:
                with torch.no_grad():
                    self.adopt_grad(i)
            entry = state.get(p)
            buf = None if entry is None else entry.get("momentum_buffer")
            if buf is None:
                first[i] = True
                if on:
                    starting.append(i)
            else:
                first[i] = False
                if buf is not self.momentum_views[i]:  # e.g. after load_state_dict
                    with torch.no_grad():
                        self.momentum_views[i].copy_(buf)
                    entry["momentum_buffer"] = self.momentum_views[i]
        return starting


def _step_with_hooks(func: Callable) -> Callable:
    """torch's ``Optimizer.profile_hook_step`` (step pre/post hooks, the profiler label), but
    the profiler scope is only opened while profiling: it cost 7 us of every step."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        self = args[0]
        pre, post = self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks
        global_pre = _torch_optimizer._global_optimizer_pre_hooks
        global_post = _torch_optimizer._global_optimizer_post_hooks
        if not (pre or post or global_pre or global_post or torch.autograd._profiler_enabled()):
            return func(*args, **kwargs)
        name = f"Optimizer.step#{self.__class__.__name__}.step"
        with torch.autograd.profiler.record_function(name):
            for hook in chain(global_pre.values(), pre.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    if isinstance(result, tuple) and len(result) == 2:
                        args, kwargs = result
                    else:
                        raise RuntimeError(
                            f"{func} must return None or a tuple of (new_args, new_kwargs), "
                            f"but got {result}."
                        )
            out = func(*args, **kwargs)
            self._optimizer_step_code()
            for hook in chain(post.values(), global_post.values()):
                hook(self, args, kwargs)
            return out

    wrapper.hooked = True  # tells torch.optim.Optimizer not to wrap it again
    return wrapper


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with each group stepped by one Numba kernel call (see module doc)."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ):
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        self._flat: dict[int, FlatGroup] = {}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_flat", {})

    @staticmethod
    def _kernels_can_run(params: list[torch.Tensor]) -> bool:
        dtypes = {p.dtype for p in params}
        return (
            len(dtypes) == 1
            and dtypes.pop() in KERNEL_DTYPES
            and all(p.device.type == "cpu" and not p.is_sparse for p in params)
            and all(p.grad is None or not p.grad.is_sparse for p in params)
        )

    @_step_with_hooks
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One SGD step over every group; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = group["params"]
            if not params:
                continue
            flat = self._flat.get(index)
            if flat is None or not _same(flat.params, params):
                with torch.no_grad():
                    if not self._kernels_can_run(params):
                        self._torch_step(group)
                        continue
                    flat = self._flat[index] = FlatGroup(params, self.state)
            self._kernel_step(group, flat)
        return loss

    def _kernel_step(self, group: dict, flat: FlatGroup) -> None:
        starting = flat.sync(self.state)
        if not flat.active.any():
            return
        momentum = group["momentum"]
        data, grad, buf = flat.arrays
        sgd_update(
            data,
            grad,
            buf if momentum != 0 else None,
            lr=float(group["lr"]),
            momentum=momentum,
            dampening=group["dampening"],
            weight_decay=float(group["weight_decay"]),
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            first_step=flat.first,
            segments=flat.offsets,
            active=flat.active,
        )
        if momentum != 0:
            for i in starting:
                self.state[flat.params[i]]["momentum_buffer"] = flat.momentum_views[i]

    @torch.no_grad()
    def _torch_step(self, group: dict) -> None:
        """torch's own single-tensor algorithm, for groups the kernels do not cover."""
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                bufs.append(self.state[p].get("momentum_buffer"))
        torch_sgd(
            params,
            grads,
            bufs,
            foreach=False,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            has_sparse_grad=any(g.is_sparse for g in grads),
        )
        if group["momentum"] != 0:
            for p, buf in zip(params, bufs, strict=True):
                self.state[p]["momentum_buffer"] = buf

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero every gradient as torch does: set it to None (default), or zero it in place,
        where each flat group's gradients are zeroed in one pass over its buffer."""
        in_flat: set[int] = set()
        if not set_to_none:
            for flat in self._flat.values():
                flat.grad.zero_()
                for p, ptr in zip(flat.params, flat.grad_ptrs, strict=True):
                    if p.grad is not None and p.grad.data_ptr() == ptr:
                        in_flat.add(id(p))
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or id(p) in in_flat:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

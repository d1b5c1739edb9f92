"""What the flat-buffer optimizers share: ``FlatGroup`` (one parameter group's parameters,
gradients and optimizer state in flat tensors), the step-hook wrapper and ``FlatOptimizer``
(the checks and ``zero_grad`` every one of them needs)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer

from fastcore_cv.flat_grad import KERNEL_DTYPES, register_flat_grad


class FlatGroup:
    """One parameter group's parameters, gradients and per-element state in flat tensors.

    ``keys`` name the per-element state tensors (``state[p][key]``, e.g. SGD's
    "momentum_buffer", Adam's "exp_avg"): each gets one flat tensor (``buffers[key]``, its
    NumPy twin ``arrays[key]``) and ``views[key][i]`` for parameter i, which is what
    ``state[p][key]`` holds. ``scalars`` name per-parameter 0-d state (Adam's "step"): one
    tensor of k entries whose entry i is ``state[p][name]``. The per-step check that nothing
    was replaced compares data pointers and object identities cached here (a slice per
    parameter per step cost 40 us for a 4-tensor MLP).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        state: dict,
        keys: Sequence[str] = ("momentum_buffer",),
        scalars: Sequence[tuple[str, torch.dtype]] = (),
    ) -> None:
        self.params, self.keys = params, tuple(keys)
        self.shapes = [p.shape for p in params]
        self.strides = [dense_strides(p) for p in params]
        sizes = [p.numel() for p in params]
        self.offsets = np.zeros(len(params) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        total, dtype, k = int(self.offsets[-1]), params[0].dtype, len(params)
        self.data = torch.empty(total, dtype=dtype)
        self.grad = torch.zeros(total, dtype=dtype)
        self.data_array, self.grad_array = self.data.numpy(), self.grad.numpy()
        self.buffers = {key: torch.zeros(total, dtype=dtype) for key in self.keys}
        self.arrays = {key: b.numpy() for key, b in self.buffers.items()}
        self.views = {key: [self._view(b, i) for i in range(k)] for key, b in self.buffers.items()}
        self.scalar_tensors = {name: torch.zeros(k, dtype=dt) for name, dt in scalars}
        self.scalar_arrays = {name: t.numpy() for name, t in self.scalar_tensors.items()}
        self.scalar_views = {name: list(t.unbind()) for name, t in self.scalar_tensors.items()}
        self.data_views = [self._view(self.data, i) for i in range(k)]
        self.grad_views = [self._view(self.grad, i) for i in range(k)]
        self.grad_arrays = [v.numpy() for v in self.grad_views]
        self.grad_contiguous = [v.is_contiguous() for v in self.grad_views]
        self.data_ptrs = [v.data_ptr() for v in self.data_views]
        self.grad_ptrs = [v.data_ptr() for v in self.grad_views]
        self._state = state  # the optimizer's
        self.active = np.zeros(k, dtype=np.bool_)
        self.first = np.zeros(k, dtype=np.bool_)
        for i, p in enumerate(params):
            self.data_views[i].copy_(p.detach())
            p.data = self.data_views[i]
            if p.grad is not None:
                self.adopt_grad(i)
            entry = state.get(p)
            if entry and entry.get(self.keys[0]) is not None:
                self._adopt_state(i, entry)
            register_flat_grad(p, self, i)

    def _view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Parameter i's slice of ``flat`` in its shape and memory layout (``strides[i]``):
        a channels_last weight stays channels_last, so oneDNN needs no reorder per step. The
        kernels update elementwise, so the order inside a slice is free as long as data,
        gradient and state views share it."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return flat[lo:hi].as_strided(self.shapes[i], self.strides[i])

    def _relayout(self, i: int, strides: tuple[int, ...]) -> None:
        """Parameter i's views take new strides (``model.to(memory_format=...)`` gave its data
        another layout): its gradient and state keep their values, permuted with it."""
        p, views = self.params[i], self.views
        grad_here = p.grad is not None and p.grad.data_ptr() == self.grad_ptrs[i]
        saved = {key: v[i].clone() for key, v in views.items()}
        grad = self.grad_views[i].clone() if grad_here else None
        self.strides[i] = strides
        for key, flat in self.buffers.items():
            views[key][i] = self._view(flat, i)
            views[key][i].copy_(saved[key])
        self.data_views[i] = self._view(self.data, i)
        self.grad_views[i] = self._view(self.grad, i)
        self.grad_arrays[i] = self.grad_views[i].numpy()
        self.grad_contiguous[i] = self.grad_views[i].is_contiguous()
        if grad is not None:
            self.grad_views[i].copy_(grad)
            p.grad = self.grad_views[i]
        entry = self._state.get(p)
        for key in self.keys if entry else ():  # state[p] holds views: the new ones
            if entry.get(key) is not None:
                entry[key] = views[key][i]

    def adopt_grad(self, i: int) -> None:
        """Copy a gradient torch (or the user) put in a new tensor into the flat buffer."""
        p = self.params[i]
        self.grad_views[i].copy_(p.grad)
        p.grad = self.grad_views[i]

    def _adopt_state(self, i: int, entry: dict) -> None:
        """Copy parameter i's state tensors (e.g. from load_state_dict) into the flat ones;
        a key it lacks (amsgrad switched on later) starts at zero."""
        with torch.no_grad():
            for key, views in chain(self.views.items(), self.scalar_views.items()):
                value = entry.get(key)
                if value is None:
                    views[i].zero_()
                elif value is not views[i]:
                    views[i].copy_(value)
                entry[key] = views[i]

    def start_state(self, i: int, entry: dict) -> None:
        """Parameter i's state starts now: zeros, held in the flat tensors."""
        for key, views in chain(self.views.items(), self.scalar_views.items()):
            views[i].zero_()
            entry[key] = views[i]

    def sync(self, state: dict) -> list[int]:
        """Re-adopt anything replaced since the last step; fill ``active`` (has a gradient)
        and ``first`` (no state yet: ``keys[0]`` missing) and return the active ones whose
        state starts this step."""
        active, first, key = self.active, self.first, self.keys[0]
        own = self.views[key]
        starting = []
        for i, p in enumerate(self.params):
            if p.data_ptr() != self.data_ptrs[i] or p.shape != self.shapes[i]:
                with torch.no_grad():  # someone assigned p.data
                    strides = dense_strides(p)
                    if strides != self.strides[i] and p.shape == self.shapes[i]:
                        self._relayout(i, strides)
                    self.data_views[i].copy_(p.data)
                p.data = self.data_views[i]
            g = p.grad
            on = active[i] = g is not None
            if on and g.data_ptr() != self.grad_ptrs[i]:
                with torch.no_grad():
                    self.adopt_grad(i)
            entry = state.get(p)
            buf = None if entry is None else entry.get(key)
            if buf is None:
                first[i] = True
                if on:
                    starting.append(i)
            else:
                first[i] = False
                if buf is not own[i]:  # e.g. after load_state_dict
                    self._adopt_state(i, entry)
        return starting


def dense_strides(t: torch.Tensor) -> tuple[int, ...]:
    """The strides of a dense tensor laid out as ``t`` is (its own when ``t`` is dense and
    non-overlapping, e.g. channels_last; else C-contiguous), as ``torch.empty_like`` gives."""
    return tuple(torch.empty_like(t, device="meta").stride())


def step_with_hooks(func: Callable) -> Callable:
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


def same_params(a: list, b: list) -> bool:
    """The same parameter objects in the same order (a group's flat layout still holds)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class FlatOptimizer:
    """Mixed in before a torch optimizer class: the ``_flat`` groups (index -> FlatGroup),
    the test of whether the kernels can take a group, and a ``zero_grad`` that zeroes each
    flat gradient buffer in one pass."""

    _flat: dict[int, FlatGroup]

    def _group_flat(self, index: int, group: dict) -> FlatGroup | None:
        """Group ``index``'s flat buffers, kept or rebuilt; None: torch's own step takes it."""
        raise NotImplementedError

    @step_with_hooks
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step over every group (one kernel call each, or torch's step where the kernel
        cannot run); returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):  # type: ignore[attr-defined]
            if not group["params"]:
                continue
            flat = self._group_flat(index, group)
            if flat is None:
                self._torch_step(group)  # type: ignore[attr-defined]
            else:
                self._kernel_step(group, flat)  # type: ignore[attr-defined]
        return loss

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self.__dict__.setdefault("_flat", {})

    @staticmethod
    def kernels_can_run(params: list[torch.Tensor]) -> bool:
        """One float32/float64 dtype, CPU, dense parameters and gradients."""
        dtypes = {p.dtype for p in params}
        return (
            len(dtypes) == 1
            and dtypes.pop() in KERNEL_DTYPES
            and all(p.device.type == "cpu" and not p.is_sparse for p in params)
            and all(p.grad is None or not p.grad.is_sparse for p in params)
        )

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
        for group in self.param_groups:  # type: ignore[attr-defined]
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

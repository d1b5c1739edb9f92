"""``SGD``: a drop-in for ``torch.optim.SGD`` that steps each parameter group with ONE kernel
call over a flat buffer.

On the first step a group's parameters, gradients and momentum buffers move into three flat
tensors, and every ``param.data``, ``param.grad`` and ``state['momentum_buffer']`` becomes a
view into them. Autograd then accumulates gradients straight into the flat gradient buffer,
and ``fastcore_cv.kernels.sgd_update`` updates the whole group in one pass (measured 1.67x
torch's fused SGD over 100 tensors, bench/RESULTS.md "sgd").

Same semantics as torch (lr, momentum, dampening, weight_decay, nesterov, maximize, the
first-step buffer rule, parameters without a gradient skipped), same state_dict, works with
torch LR schedulers. One visible difference: ``zero_grad()`` zeroes the flat gradient buffer
in one pass and keeps ``param.grad`` as a zero view instead of setting it to None; the
optimizer still skips parameters that received no gradient since, as torch would.
Groups the kernels cannot take (not CPU float32/float64, mixed dtypes, sparse gradients)
are stepped by torch's own implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.optim.sgd import sgd as torch_sgd

from fastcore_cv.kernels.sgd import sgd_update
from fastcore_cv.threads import sync_torch

sync_torch()

KERNEL_DTYPES = (torch.float32, torch.float64)


class FlatGroup:
    """One parameter group's parameters, gradients and momentum in three flat tensors."""

    def __init__(self, params: list[torch.Tensor], state: dict) -> None:
        self.params = params
        sizes = [p.numel() for p in params]
        self.offsets = np.zeros(len(params) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        total, dtype = int(self.offsets[-1]), params[0].dtype
        self.data = torch.empty(total, dtype=dtype)
        self.grad = torch.zeros(total, dtype=dtype)
        self.momentum = torch.zeros(total, dtype=dtype)
        # has_grad: torch's "p.grad is not None", kept per parameter because grads stay views.
        self.has_grad = np.zeros(len(params), dtype=np.bool_)
        self.hooks = []
        for i, p in enumerate(params):
            self.segment(self.data, i).copy_(p.detach().reshape(-1))
            p.data = self.view(self.data, i)
            if p.grad is not None:
                self.adopt_grad(i)
            buf = state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                self.view(self.momentum, i).copy_(buf)
                state[p]["momentum_buffer"] = self.view(self.momentum, i)
            self.hooks.append(p.register_post_accumulate_grad_hook(self._mark(i)))

    def _mark(self, i: int) -> Callable[[torch.Tensor], None]:
        def hook(_p: torch.Tensor) -> None:
            self.has_grad[i] = True

        return hook

    def segment(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        return flat[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        return self.segment(flat, i).view(self.params[i].shape)

    def is_view(self, t: torch.Tensor, flat: torch.Tensor, i: int) -> bool:
        return t.data_ptr() == self.segment(flat, i).data_ptr() and t.shape == self.params[i].shape

    def adopt_grad(self, i: int) -> None:
        """Copy a gradient torch (or the user) put in a new tensor into the flat buffer."""
        p = self.params[i]
        self.view(self.grad, i).copy_(p.grad)
        p.grad = self.view(self.grad, i)
        self.has_grad[i] = True

    def sync(self, state: dict) -> tuple[np.ndarray, np.ndarray]:
        """Re-adopt anything replaced since the last step; return (active, first_step)."""
        first = np.zeros(len(self.params), dtype=np.bool_)
        for i, p in enumerate(self.params):
            if not self.is_view(p.data, self.data, i):  # someone assigned p.data
                self.view(self.data, i).copy_(p.data)
                p.data = self.view(self.data, i)
            if p.grad is None:
                self.has_grad[i] = False
            elif not self.is_view(p.grad, self.grad, i):
                self.adopt_grad(i)
            buf = state.get(p, {}).get("momentum_buffer")
            if buf is None:
                first[i] = True
            elif not self.is_view(buf, self.momentum, i):  # e.g. after load_state_dict
                self.view(self.momentum, i).copy_(buf)
                state[p]["momentum_buffer"] = self.view(self.momentum, i)
        return self.has_grad.copy(), first


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

    @torch.no_grad()
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
            if flat is None or flat.params != params:
                if not self._kernels_can_run(params):
                    self._torch_step(group)
                    continue
                flat = self._flat[index] = FlatGroup(params, self.state)
            self._kernel_step(group, flat)
        return loss

    def _kernel_step(self, group: dict, flat: FlatGroup) -> None:
        active, first = flat.sync(self.state)
        if not active.any():
            return
        momentum = group["momentum"]
        sgd_update(
            flat.data.numpy(),
            flat.grad.numpy(),
            flat.momentum.numpy() if momentum != 0 else None,
            lr=float(group["lr"]),
            momentum=momentum,
            dampening=group["dampening"],
            weight_decay=float(group["weight_decay"]),
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            first_step=first,
            segments=flat.offsets,
            active=active,
        )
        if momentum != 0:
            for i in np.flatnonzero(active & first):
                self.state[flat.params[i]]["momentum_buffer"] = flat.view(flat.momentum, i)

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
        """Zero every gradient. Flat groups zero their buffer in one pass and keep the views;
        with ``set_to_none`` their parameters count as having no gradient until backward."""
        flat_params = set()
        for flat in self._flat.values():
            flat.grad.zero_()
            if set_to_none:
                flat.has_grad[:] = False
            flat_params.update(id(p) for p in flat.params)
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in flat_params or p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

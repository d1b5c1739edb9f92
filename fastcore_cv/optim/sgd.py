"""``SGD``: a drop-in for ``torch.optim.SGD`` that steps each parameter group with ONE kernel
call over a flat buffer.

On the first step a group's parameters, gradients and momentum buffers move into three flat
tensors (``flat.FlatGroup``), and every ``param.data``, ``param.grad`` and
``state['momentum_buffer']`` becomes a view into them; ``fastcore_cv.kernels.sgd_update``
then updates the whole group in one pass (measured 1.67x torch's fused SGD over 100 tensors,
bench/RESULTS.md "sgd").

Same semantics as torch (lr, momentum, dampening, weight_decay, nesterov, maximize, the
first-step buffer rule, parameters without a gradient skipped, ``zero_grad`` setting grads to
None), same state_dict, works with torch LR schedulers and step hooks. A gradient that
autograd put in a new tensor is copied into the flat buffer at the next step, unless the
layer wrote it there directly (``fastcore_cv.flat_grad``: fastcore_cv.nn.Linear does). Groups
the kernels cannot take (not CPU float32/float64, mixed dtypes, sparse gradients) are stepped by
torch's own implementation.
"""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd as torch_sgd

from fastcore_cv.kernels.sgd import sgd_update
from fastcore_cv.optim.flat import FlatGroup, FlatOptimizer, same_params
from fastcore_cv.threads import sync_torch

sync_torch()

MOMENTUM = "momentum_buffer"


class SGD(FlatOptimizer, torch.optim.SGD):
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

    def _group_flat(self, index: int, group: dict) -> FlatGroup | None:
        params, flat = group["params"], self._flat.get(index)
        if flat is None or not same_params(flat.params, params):
            with torch.no_grad():
                if not self.kernels_can_run(params):
                    return None
                flat = self._flat[index] = FlatGroup(params, self.state, (MOMENTUM,))
        return flat

    def _kernel_step(self, group: dict, flat: FlatGroup) -> None:
        starting = flat.sync(self.state)
        if not flat.active.any():
            return
        momentum = group["momentum"]
        sgd_update(
            flat.data_array,
            flat.grad_array,
            flat.arrays[MOMENTUM] if momentum != 0 else None,
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
                self.state[flat.params[i]][MOMENTUM] = flat.views[MOMENTUM][i]

    @torch.no_grad()
    def _torch_step(self, group: dict) -> None:
        """torch's own single-tensor algorithm, for groups the kernels do not cover."""
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                bufs.append(self.state[p].get(MOMENTUM))
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
                self.state[p][MOMENTUM] = buf

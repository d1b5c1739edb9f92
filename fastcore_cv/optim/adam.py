"""``Adam`` and ``AdamW``: drop-ins for torch's, each parameter group stepped by ONE kernel call
over flat buffers (``fastcore_cv.kernels.adam_update``), as ``SGD`` is (optim/sgd.py).

Parameters, gradients, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) live
in flat tensors and each parameter's ``step`` in one tensor of k entries; ``state[p]`` holds
views into them, so ``state_dict``/``load_state_dict`` round-trip with torch's Adam/AdamW.
Same constructor arguments as torch's. ``foreach``/``fused`` choose among torch's own
implementations and are kept in the groups (the kernel steps a group either way); groups the
kernel cannot take (not CPU float32/float64, sparse gradients, ``capturable``,
``differentiable``, a GradScaler's ``grad_scale``) are stepped by torch's own ``adam``.

On this CPU the kernel rounds each operation as torch's fused Adam does: bit-identical over
100 steps except the last (n mod 16) elements of a tensor, which torch's scalar tail rounds
its own way. torch's default (for-loop) path differs by ~1 ulp per step: its sqrt is not
correctly rounded (tests/test_optim_adam.py).
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as torch_adam

from fastcore_cv.kernels.adam import adam_update
from fastcore_cv.optim.flat import FlatGroup, FlatOptimizer, same_params
from fastcore_cv.threads import sync_torch

sync_torch()

# fastai's Adam: decoupled weight decay 1e-2, betas (0.9, 0.99), eps 1e-5 (the Learner's
# default optimizer, learner/core.py default_opt, and its kernel twin in backend.py).
FASTAI_ADAMW = {"betas": (0.9, 0.99), "eps": 1e-5, "weight_decay": 1e-2}

MOMENTS = ("exp_avg", "exp_avg_sq")
MAX = "max_exp_avg_sq"


def _step_dtype() -> torch.dtype:
    """The dtype torch gives ``state['step']`` off the fused/capturable paths."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Adam(FlatOptimizer, torch.optim.Adam):
    """``torch.optim.Adam`` with each group stepped by one Numba kernel call (see module doc)."""

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        self._flat: dict[int, FlatGroup] = {}

    def _kernel_takes(self, group: dict) -> bool:
        return (
            not group["capturable"]
            and not group["differentiable"]
            and getattr(self, "grad_scale", None) is None
            and getattr(self, "found_inf", None) is None
            and self.kernels_can_run(group["params"])
        )

    def _group_flat(self, index: int, group: dict) -> FlatGroup | None:
        params, flat = group["params"], self._flat.get(index)
        keys = (*MOMENTS, MAX) if group["amsgrad"] else MOMENTS
        if flat is None or flat.keys != keys or not same_params(flat.params, params):
            self._flat.pop(index, None)
            if not self._kernel_takes(group):
                return None
            with torch.no_grad():
                flat = FlatGroup(params, self.state, keys, (("step", _step_dtype()),))
            self._flat[index] = flat
        return flat

    @torch.no_grad()
    def _kernel_step(self, group: dict, flat: FlatGroup) -> None:
        starting = flat.sync(self.state)
        if not flat.active.any():
            return
        for i in starting:  # torch's lazy state: step 0, zero moments
            flat.start_state(i, self.state[flat.params[i]])
        steps = flat.scalar_arrays["step"]
        steps[flat.active] += 1  # state['step'] += 1, in its own dtype as torch does
        beta1, beta2 = group["betas"]
        adam_update(
            flat.data_array,
            flat.grad_array,
            flat.arrays["exp_avg"],
            flat.arrays["exp_avg_sq"],
            flat.arrays[MAX] if group["amsgrad"] else None,
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=group["eps"],
            weight_decay=float(group["weight_decay"]),
            decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            step=steps,
            segments=flat.offsets,
            active=flat.active,
        )

    def _torch_step(self, group: dict) -> None:
        """torch's own Adam on one group (the body of torch.optim.Adam.step), for groups the
        kernel does not cover; foreach/fused/capturable as the group asks."""
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
        with torch.set_grad_enabled(group["differentiable"]):
            has_complex = self._init_group(
                group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
            )
            beta1, beta2 = group["betas"]
            torch_adam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                steps,
                amsgrad=group["amsgrad"],
                has_complex=has_complex,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                foreach=group["foreach"],
                capturable=group["capturable"],
                differentiable=group["differentiable"],
                fused=group["fused"],
                grad_scale=getattr(self, "grad_scale", None),
                found_inf=getattr(self, "found_inf", None),
                decoupled_weight_decay=group["decoupled_weight_decay"],
            )


class AdamW(Adam):
    """``torch.optim.AdamW`` (Adam with decoupled weight decay, default 1e-2) on the kernel."""

    def __init__(
        self,
        params,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # as torch's AdamW: always decoupled
            group["decoupled_weight_decay"] = True

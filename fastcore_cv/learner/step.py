"""One training step and one evaluation pass, with errors that name the batch and the culprit.

A failure deep inside torch ("mat1 and mat2 shapes cannot be multiplied") is re-raised as a
ValueError saying which batch, which part (model or loss_func) and what went in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fastcore_cv.learner.data import check_batch, count_nonfinite

_USER_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def describe(t: Any) -> str:
    """'float32 tensor of shape (32, 4)', or the type name for anything else."""
    if isinstance(t, torch.Tensor):
        return f"{str(t.dtype).replace('torch.', '')} tensor of shape {tuple(t.shape)}"
    return type(t).__name__


def forward(model: nn.Module, x: Any, where: str) -> Any:
    try:
        return model(x)
    except _USER_ERRORS as e:
        raise ValueError(
            f"model: failed on {where} (x: {describe(x)}): {type(e).__name__}: {e}"
        ) from e


def compute_loss(loss_func: Callable, out: Any, y: Any, where: str) -> torch.Tensor:
    try:
        loss = loss_func(out, y)
    except _USER_ERRORS as e:
        raise ValueError(
            f"loss_func: failed on {where} (model output: {describe(out)}, "
            f"y: {describe(y)}): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(
            f"loss_func: must return one number (the batch mean), got {describe(loss)} on {where}"
        )
    return loss


def explain_nonfinite(
    model: nn.Module, x: Any, y: Any, out: Any, value: float, where: str, first: bool
) -> None:
    """Raise when a NaN/inf loss comes from the data or the setup rather than the LR.

    NaN/inf in x or y: the data is at fault. On the first batch of a run, before any
    update: the model or loss is at fault. Otherwise return: the run diverged, which
    TerminateOnNaN and ``diagnose`` explain as a learning rate that is too high.
    """
    for name, t in (("x", x), ("y", y)):
        bad, n = count_nonfinite(t)
        if bad:
            raise ValueError(
                f"{name}: {where} contains {bad} NaN/inf value(s) out of {n}; the loss is "
                f"{value}. Clean or impute the data: NaN inputs make every loss NaN"
            )
    if first:
        bad_out = count_nonfinite(out)[0]
        bad_w = sum(count_nonfinite(p.detach())[0] for p in model.parameters())
        raise ValueError(
            f"loss_func: returned {value} on {where}, before any weight update, so the "
            f"learning rate is not the cause (model output: {bad_out} non-finite values; "
            f"weights: {bad_w} non-finite). Check the model and the loss function, or "
            "re-create a model whose weights an earlier run made NaN"
        )


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_func: Callable,
    x: Any,
    y: Any,
    where: str,
    first: bool = False,
) -> float:
    """Forward, loss, backward, step; return the loss. A NaN/inf loss never updates weights."""
    model.train()
    out = forward(model, x, where)
    loss = compute_loss(loss_func, out, y, where)
    value = float(loss.detach())
    if not math.isfinite(value):
        explain_nonfinite(model, x, y, out, value, where, first)
        return value
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return value


def collect(
    model: nn.Module, loss_func: Callable, loader: Iterable, name: str
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Outputs, targets, size-weighted loss sum and item count over ``loader``, in eval mode."""
    model.eval()
    outs, targs, total, count = [], [], 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            where = f"batch {i} of the {name} data"
            x, y = check_batch(batch, where)
            out = forward(model, x, where)
            value = float(compute_loss(loss_func, out, y, where))
            if not math.isfinite(value):
                explain_nonfinite(model, x, y, out, value, where, first=False)
            n = out.shape[0]
            outs.append(out)
            targs.append(torch.as_tensor(y))
            total, count = total + value * n, count + n
    if count == 0:
        return torch.empty(0), torch.empty(0), math.nan, 0
    return torch.cat(outs), torch.cat(targs), total, count

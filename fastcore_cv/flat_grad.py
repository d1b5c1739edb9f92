"""What ``nn.py`` (the layers) and ``optim.py`` (the flat-buffer SGD) share, below both:
the torch dtypes the kernels take, and where a layer's backward may write a gradient so
that the optimizer finds it in its flat buffer without a copy.

``optim.FlatGroup`` registers each parameter it moves into a flat buffer
(``register_flat_grad``); ``nn.Linear``'s backward asks ``flat_grad_view`` for the place.
The group is duck-typed here (``params``, ``grad_views``, ``grad_arrays``,
``grad_contiguous``) so that this
module imports neither of them.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from fastcore_cv.kernels import FLOAT_DTYPES

# The torch dtypes the kernels take: kernels.FLOAT_DTYPES in torch's terms.
KERNEL_DTYPES = tuple(getattr(torch, d.name) for d in FLOAT_DTYPES)

# id(parameter) -> (weak ref to the parameter, weak ref to its FlatGroup, index), for
# flat_grad_view. Weak both ways: neither a parameter nor a discarded optimizer's buffers are
# kept alive by it. (Tensors cannot be WeakKeyDictionary keys: their == is elementwise.)
_FLAT_GRAD: dict[int, tuple] = {}


def register_flat_grad(p: torch.Tensor, flat: Any, i: int) -> None:
    """Record that ``p``'s gradient lives at ``flat.grad_views[i]`` (``flat``: a FlatGroup)."""
    key = id(p)
    _FLAT_GRAD[key] = (weakref.ref(p, lambda _ref: _FLAT_GRAD.pop(key, None)), weakref.ref(flat), i)


def flat_grad_view(p: torch.Tensor) -> tuple[torch.Tensor, np.ndarray] | None:
    """Where a kernel may write ``p``'s gradient so that the optimizer finds it in place.

    Returns a fresh tensor view of the flat gradient buffer, and a NumPy view of the same
    memory, when ``p`` belongs to a live flat group and has no gradient (after
    ``zero_grad()``), else None. Returned from a backward, autograd adopts the tensor as
    ``p.grad`` without a copy (nothing else references the new view), which saves zeroing
    the buffer and adding into it (28 us per step for a 784x256 weight).
    """
    entry = _FLAT_GRAD.get(id(p))
    if entry is None or entry[0]() is not p or p.grad is not None:
        return None
    flat, i = entry[1](), entry[2]
    if flat is None or flat.params[i] is not p or not flat.grad_contiguous[i]:
        return None  # (a kernel writes C order: a channels_last view takes torch's copy)
    # detach(): a new tensor object on the same memory (0.4 us; slice + view took 3.4 us).
    return flat.grad_views[i].detach(), flat.grad_arrays[i]

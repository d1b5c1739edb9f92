"""Suite "softmax_cross_entropy": loss AND gradient w.r.t. the logits, float32, mean reduction.

fastcore_cv returns both from one call; the torch baseline is what a training step pays in
eager mode: F.cross_entropy forward on a requires_grad tensor, then backward through autograd
(grad reset to None first, as optimizer.zero_grad() does). Target: >= 2x torch eager.
Work = bytes of logits read plus gradient written (8 per logit), so rate = GB/s.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastcore_cv.kernels.loss import softmax_cross_entropy

BATCHES = [64, 256, 1024]
CLASSES = [10, 100, 1000]


def torch_step(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits.grad = None
    F.cross_entropy(logits, targets).backward()
    return logits.grad


@pytest.fixture(scope="module", params=[(n, c) for n in BATCHES for c in CLASSES])
def batch(request):
    n, c = request.param
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    targets = rng.integers(0, c, size=n)
    return n, c, logits, targets


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", ["fastcore_cv", "torch"])
def test_softmax_cross_entropy(measure, batch, impl, threads):
    n, c, logits, targets = batch
    if impl == "torch":
        args = (
            torch_step,
            torch.from_numpy(logits.copy()).requires_grad_(),
            torch.from_numpy(targets),
        )
    else:
        args = (softmax_cross_entropy, logits, targets)
    measure(
        *args,
        suite="softmax_cross_entropy",
        case=f"{n}x{c} float32 fwd+bwd",
        impl=impl,
        threads=threads,
        work=8 * n * c,
        unit="B",
    )

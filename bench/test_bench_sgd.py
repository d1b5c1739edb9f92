"""Suite "sgd": one SGD step (momentum 0.9, weight decay 1e-4) on a 100 x 100k-parameter model.

fastcore_cv: one sgd_update call over flat float32 buffers (params, grads, momentum).
torch: torch.optim.SGD default (the per-tensor for-loop on CPU) and fused=True.
Work = bytes moved, 20 per element (read p, g, b; write p, b), so rate = GB/s. The
"copy" case is the bandwidth yardstick: np.copyto of 10M float32, 8 bytes per element.
"""

import numpy as np
import pytest
import torch

from fastcore_cv.kernels.flat import FlatBuffer
from fastcore_cv.kernels.sgd import sgd_update

TENSORS, SIZE = 100, 100_000
N = TENSORS * SIZE
HYPER = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)
CASE = f"{TENSORS} x {SIZE // 1000}k float32, momentum"


@pytest.fixture(scope="module")
def flat_model():
    rng = np.random.default_rng(0)
    params = FlatBuffer([(SIZE,)] * TENSORS, np.float32)
    params.data[:] = rng.standard_normal(N, dtype=np.float32)
    grads, momentum = params.like(), params.like()
    grads.data[:] = rng.standard_normal(N, dtype=np.float32)
    return params, grads, momentum


def torch_optimizer(**kwargs):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(SIZE, generator=gen)) for _ in range(TENSORS)]
    for p in params:
        p.grad = torch.randn(SIZE, generator=gen)
    return torch.optim.SGD(params, **HYPER, **kwargs)


@pytest.mark.parametrize("threads", [1, 2])
def test_sgd_ours(measure, flat_model, threads):
    params, grads, momentum = flat_model
    state = {"first": True}

    def step():
        sgd_update(
            params.data,
            grads.data,
            momentum.data,
            segments=params.offsets,
            first_step=state["first"],
            **HYPER,
        )
        state["first"] = False

    measure(
        step, suite="sgd", case=CASE, impl="fastcore_cv", threads=threads, work=20 * N, unit="B"
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", ["torch", "torch-fused"])
def test_sgd_torch(measure, impl, threads):
    # torch's default on CPU tensors is the per-tensor for-loop (_single_tensor_sgd).
    opt = torch_optimizer() if impl == "torch" else torch_optimizer(fused=True)
    measure(opt.step, suite="sgd", case=CASE, impl=impl, threads=threads, work=20 * N, unit="B")


@pytest.mark.parametrize("threads", [1, 2])
def test_copy_bandwidth(measure, threads):
    src = np.random.default_rng(0).standard_normal(N, dtype=np.float32)
    dst = np.empty_like(src)
    measure(
        np.copyto,
        dst,
        src,
        suite="sgd",
        case="copy 10M float32 (bandwidth yardstick)",
        impl="numpy-copy",
        threads=threads,
        work=8 * N,
        unit="B",
    )

"""Suite "Adam update": one AdamW step (fastai's settings: weight decay 1e-2 decoupled, betas
(0.9, 0.99), eps 1e-5) on a model of 10 float32 tensors, 1e4 to 1e7 parameters in all.

fastcore_cv: ``fastcore_cv.optim.AdamW.step()`` (the drop-in: one kernel call over the flat
buffers, plus its per-step bookkeeping); "adam_update": the kernel call alone.
torch: torch.optim.AdamW default (the per-tensor for-loop on CPU), foreach=True, fused=True.
Work = bytes moved, 28 per element (read p, g, m, v; write p, m, v), so rate = GB/s. The
"stream" case is the bandwidth limit for that traffic: a Numba loop reading the same four
arrays and writing the same three with one add each (no math), on the same thread count;
"ratio vs stream" is then the fraction of that limit the step reaches.
"""

import numpy as np
import pytest
import torch
from numba import njit, prange

from fastcore_cv.kernels.adam import adam_update
from fastcore_cv.kernels.flat import FlatBuffer
from fastcore_cv.optim import FASTAI_ADAMW, AdamW
from fastcore_cv.threads import get_num_threads

TENSORS = 10
SIZES = [10_000, 100_000, 1_000_000, 10_000_000]
BYTES = 28  # per element: 4 arrays read, 3 written (float32)
SUITE = "Adam update"
BETA1, BETA2 = FASTAI_ADAMW["betas"]
HYPER = dict(
    lr=1e-3,
    beta1=BETA1,
    beta2=BETA2,
    eps=FASTAI_ADAMW["eps"],
    weight_decay=FASTAI_ADAMW["weight_decay"],
    decoupled_weight_decay=True,
)


def case(n: int) -> str:
    return f"{TENSORS} x {n // TENSORS:,} float32 (n={n:.0e})"


def torch_params(n: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n // TENSORS, generator=gen)) for _ in range(TENSORS)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def measure_step(measure, opt, impl, n, threads):
    measure(
        opt.step, suite=SUITE, case=case(n), impl=impl, threads=threads, work=BYTES * n, unit="B"
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", SIZES)
def test_adam_ours(measure, n, threads):
    opt = AdamW(torch_params(n), lr=1e-3, **FASTAI_ADAMW)
    measure_step(measure, opt, "fastcore_cv", n, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", SIZES)
def test_adam_kernel_alone(measure, n, threads):
    rng = np.random.default_rng(0)
    params = FlatBuffer([(n // TENSORS,)] * TENSORS, np.float32)
    params.data[:] = rng.standard_normal(n, dtype=np.float32)
    grads, m, v = params.like(), params.like(), params.like()
    grads.data[:] = rng.standard_normal(n, dtype=np.float32)
    steps = np.ones(TENSORS, np.int64)

    def step():
        adam_update(
            params.data, grads.data, m.data, v.data, **HYPER, step=steps, segments=params.offsets
        )
        steps[:] += 1

    measure(step, suite=SUITE, case=case(n), impl="adam_update", threads=threads,
            work=BYTES * n, unit="B")  # fmt: skip


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["torch", "torch-foreach", "torch-fused"])
def test_adam_torch(measure, impl, n, threads):
    kwargs = {"torch": {}, "torch-foreach": {"foreach": True}, "torch-fused": {"fused": True}}
    opt = torch.optim.AdamW(torch_params(n), lr=1e-3, **FASTAI_ADAMW, **kwargs[impl])
    measure_step(measure, opt, impl, n, threads)


@njit(cache=True, nogil=True)
def _stream_serial(p, g, m, v):
    for i in range(p.shape[0]):
        gi = g[i]
        p[i] += gi
        m[i] += gi
        v[i] += gi


@njit(cache=True, nogil=True, parallel=True)
def _stream_parallel(p, g, m, v):
    n, chunk = p.shape[0], 16_384
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        _stream_serial(
            p[lo : lo + chunk], g[lo : lo + chunk], m[lo : lo + chunk], v[lo : lo + chunk]
        )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", SIZES)
def test_stream_bandwidth(measure, n, threads):
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal(n, dtype=np.float32) * 1e-30 for _ in range(4))

    def stream():
        (_stream_parallel if get_num_threads() > 1 else _stream_serial)(p, g, m, v)

    measure(stream, suite=SUITE, case=case(n), impl="stream", threads=threads,
            work=BYTES * n, unit="B")  # fmt: skip

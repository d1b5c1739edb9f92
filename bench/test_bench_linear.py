"""Suite "linear": one layer's forward AND backward, float32, the MNIST MLP's two layers.

784->256 with ReLU is a first layer (its input needs no gradient: need_grad_x=False in
fastcore_cv, x without requires_grad in torch); 256->10 is the logits layer, whose input
gradient is needed. torch baseline: F.linear (+ relu) forward on requires_grad parameters,
then backward(grad_out) through autograd, grads reset to None first (optimizer.zero_grad()).
Work = FLOPs of the matmuls (2*N*in*out each), so rate = GFLOP/s. No fixed target.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastcore_cv.kernels.linear import linear, linear_backward

# (in, out, activation, first layer?)
LAYERS = {"784->256 relu": (784, 256, "relu", True), "256->10": (256, 10, None, False)}
BATCHES = [64, 256]


def ours_step(x, w, b, g, activation, need_grad_x):
    out = linear(x, w, b, activation)
    return linear_backward(x, w, g, activation, out, need_grad_x=need_grad_x)


def torch_step(x, w, b, g, activation, need_grad_x):
    w.grad = b.grad = x.grad = None
    y = F.linear(x, w, b)
    if activation == "relu":
        y = torch.relu(y)
    y.backward(g)
    return x.grad, w.grad, b.grad


@pytest.fixture(scope="module", params=[(name, n) for name in LAYERS for n in BATCHES])
def layer(request):
    name, n = request.param
    fan_in, fan_out, activation, first = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, fan_in), dtype=np.float32)
    w = (rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)).astype(np.float32)
    b = rng.standard_normal(fan_out, dtype=np.float32)
    g = rng.standard_normal((n, fan_out), dtype=np.float32)
    return name, n, fan_in, fan_out, activation, first, x, w, b, g


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", ["fastcore_cv", "torch"])
def test_linear(measure, layer, impl, threads):
    name, n, fan_in, fan_out, activation, first, x, w, b, g = layer
    need_grad_x = not first
    if impl == "torch":
        step = torch_step
        x = torch.from_numpy(x.copy()).requires_grad_(need_grad_x)
        w = torch.from_numpy(w.copy()).requires_grad_()
        b = torch.from_numpy(b.copy()).requires_grad_()
        g = torch.from_numpy(g)
    else:
        step = ours_step
    matmuls = 3 if need_grad_x else 2
    measure(
        step,
        x,
        w,
        b,
        g,
        activation,
        need_grad_x,
        suite="linear",
        case=f"{name} bs{n} float32 fwd+bwd",
        impl=impl,
        threads=threads,
        work=matmuls * 2 * n * fan_in * fan_out,
        unit="FLOP",
    )

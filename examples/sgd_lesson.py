"""The lesson's SGD notebook, three ways: fit y = a1*x1 + a2 by mini-batch SGD.

We imagine x2 = 1, so y = a1*x1 + a2*x2 is a matrix product: y_hat = X @ a with X = [x1, 1].
Each epoch is one pass over all the mini-batches; each mini-batch updates the weights once.
The same run is done in pure NumPy, in the Numba kernels (matmul for the product, sgd_update
for the step) and in torch autograd; the three trajectories must agree.

Run: python examples/sgd_lesson.py [--out runs/sgd_lesson]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastcore_cv.kernels.gemm import matmul
from fastcore_cv.kernels.sgd import sgd_update

TRUE_A = np.array([3.0, 2.0])  # y = 3*x1 + 2, the line SGD must find


@dataclass
class Run:
    """One implementation's trajectory: weights after every mini-batch, loss per epoch."""

    name: str
    weights: np.ndarray  # (steps + 1, 2)
    epoch_losses: list[float]
    seconds_per_epoch: float


def make_data(n: int = 100, seed: int = 42, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """X = [x1, 1] with x1 uniform in [-1, 1], y = X @ TRUE_A + noise."""
    rng = np.random.default_rng(seed)
    x = np.ones((n, 2), dtype=dtype)
    x[:, 0] = rng.uniform(-1, 1, n)
    y = (x @ TRUE_A.astype(dtype) + rng.normal(0, 0.3, n)).astype(dtype)
    return x, y


def batches(n: int, bs: int, epoch: int, seed: int) -> list[np.ndarray]:
    """The same shuffled mini-batch indices for every implementation."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + bs] for i in range(0, n, bs)]


def fit_numpy(x, y, lr=0.1, epochs=30, bs=10, seed=0) -> Run:
    """Plain NumPy: y_hat = X a, loss = mean((y_hat - y)^2), grad = 2/n X^T (y_hat - y)."""
    a = np.array([-1.0, 1.0], dtype=x.dtype)
    return _loop("numpy", x, y, a, lr, epochs, bs, seed, _numpy_step)


def _numpy_step(xb, yb, a, lr):
    residual = xb @ a - yb
    grad = (2.0 / len(yb)) * (xb.T @ residual)
    a -= lr * grad
    return float(np.mean(residual**2))


def fit_kernels(x, y, lr=0.1, epochs=30, bs=10, seed=0) -> Run:
    """The Numba kernels: matmul for both products, sgd_update for the step."""
    a = np.array([-1.0, 1.0], dtype=x.dtype)
    return _loop("numba kernels", x, y, a, lr, epochs, bs, seed, _kernel_step)


def _kernel_step(xb, yb, a, lr):
    residual = matmul(xb, a.reshape(2, 1)).reshape(-1) - yb
    grad = matmul(xb, residual.reshape(-1, 1), trans_a=True).reshape(-1)
    grad *= xb.dtype.type(2.0 / len(yb))
    sgd_update(a, grad, lr=lr)
    return float(np.mean(residual**2))


def fit_torch(x, y, lr=0.1, epochs=30, bs=10, seed=0) -> Run:
    """torch autograd: the loss's backward() computes the same gradient for us."""
    import torch

    a = torch.tensor([-1.0, 1.0], dtype=getattr(torch, str(x.dtype)), requires_grad=True)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step(xb_idx, _yb, w, lr):
        xb, yb = tx[xb_idx], ty[xb_idx]
        loss = ((xb @ w - yb) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            w.grad.zero_()
        return float(loss.detach())

    return _loop("torch autograd", x, y, a, lr, epochs, bs, seed, step, by_index=True)


def _loop(name, x, y, a, lr, epochs, bs, seed, step, by_index=False) -> Run:
    weights = [_as_np(a).copy()]
    losses, times = [], []
    for epoch in range(epochs):
        total, start = 0.0, time.perf_counter()
        idx_list = batches(len(y), bs, epoch, seed)
        for idx in idx_list:
            xb = idx if by_index else x[idx]
            total += step(xb, y[idx], a, lr) * len(idx)
            weights.append(_as_np(a).copy())
        losses.append(total / len(y))
        times.append(time.perf_counter() - start)
    # Median epoch: the first one also pays for loading compiled kernels.
    return Run(name, np.array(weights), losses, float(np.median(times)))


def _as_np(a) -> np.ndarray:
    return a.detach().numpy() if hasattr(a, "detach") else a


def table(runs: list[Run]) -> str:
    """The comparison table: final weights, final loss, time per epoch."""
    lines = [f"{'implementation':<16} {'a1':>8} {'a2':>8} {'loss':>8} {'time/epoch':>12}"]
    for r in runs:
        a1, a2 = r.weights[-1]
        t = r.seconds_per_epoch * 1e3
        lines.append(f"{r.name:<16} {a1:8.4f} {a2:8.4f} {r.epoch_losses[-1]:8.4f} {t:9.3f} ms")
    return "\n".join(lines)


def plot(runs: list[Run], x: np.ndarray, y: np.ndarray, path: Path) -> Path:
    """The line converging: data, and the fitted line after a few chosen epochs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4))
    ax, ax2 = fig.subplots(1, 2)
    ax.scatter(x[:, 0], y, s=8, color="gray", label="data")
    steps_per_epoch = (len(runs[0].weights) - 1) // len(runs[0].epoch_losses)
    grid = np.linspace(-1, 1, 2)
    for epoch in (0, 1, 3, len(runs[0].epoch_losses)):
        a1, a2 = runs[0].weights[epoch * steps_per_epoch]
        ax.plot(grid, a1 * grid + a2, label=f"after {epoch} epoch(s)")
    ax.set(title="y = a1*x1 + a2 found by SGD", xlabel="x1", ylabel="y")
    ax.legend(fontsize=7)
    for r in runs:
        ax2.plot(range(1, len(r.epoch_losses) + 1), r.epoch_losses, label=r.name)
    ax2.set(title="loss per epoch (three identical curves)", xlabel="epoch", yscale="log")
    ax2.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> list[Run]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/sgd_lesson", help="where to save the plot")
    args = parser.parse_args(argv)
    x, y = make_data()
    runs = [fit_numpy(x, y), fit_kernels(x, y), fit_torch(x, y)]
    worst = max(np.abs(r.weights - runs[0].weights).max() for r in runs[1:])
    print(table(runs))
    print(f"largest difference between trajectories: {worst:.2e} (true line: a1=3, a2=2)")
    print(f"plot: {plot(runs, x, y, Path(args.out) / 'sgd_line.png')}")
    return runs


if __name__ == "__main__":
    main()

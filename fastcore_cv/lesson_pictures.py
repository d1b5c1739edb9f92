"""The lesson's pictures, drawn from the numbers the kernels compute: SGD fitting the line
y = a1*x1 + a2 step by step (GIF, or an inline HTML/JS animation in a notebook), a matrix
product cell by cell (a row of A meets a column of B), and tensor ranks from a real photo.

Torch-free: NumPy, the Numba kernels and matplotlib's ``Figure`` (Agg canvas, no pyplot).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fastcore_cv import kernels
from fastcore_cv.checks import check_int
from fastcore_cv.output_files import atomic_path

TRUE_LINE = np.array([3.0, 2.0])  # y = 3*x1 + 2, as in examples/sgd_lesson.py
START = np.array([-1.0, 1.0])  # the line SGD starts from


def save_png(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` as a PNG through a temporary file renamed into place."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi or fig.dpi)
    return path


def line_data(n: int = 100, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """X = [x1, 1] (x1 uniform in [-1, 1]; the 1 makes a2 the intercept), y = X a + noise."""
    rng = np.random.default_rng(seed)
    x = np.ones((n, 2), np.float32)
    x[:, 0] = rng.uniform(-1, 1, n)
    y = (x @ TRUE_LINE.astype(np.float32) + rng.normal(0, 0.3, n)).astype(np.float32)
    return x, y


@dataclass
class LineFit:
    """A mini-batch SGD run: the weights after every step (row 0: the start) and the loss on
    all the data at each of those weights."""

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray  # (steps + 1, 2)
    losses: np.ndarray  # (steps + 1,) mean squared error on all points
    steps_per_epoch: int


def sgd_line_fit(
    x: np.ndarray, y: np.ndarray, lr: float = 0.1, epochs: int = 10, bs: int = 10, seed: int = 0
) -> LineFit:
    """Fit y = X a by mini-batch SGD on the kernels: ``matmul`` for y_hat = X a and the
    gradient 2/n X^T (y_hat - y), ``sgd_update`` for the step. Each epoch is one pass over
    all the mini-batches (a fresh seeded shuffle); each mini-batch updates a once."""
    check_int(epochs, "epochs")
    check_int(bs, "bs")
    a = START.astype(x.dtype)
    weights = [a.copy()]
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(y))
        for i in range(0, len(y), bs):
            xb, yb = x[order[i : i + bs]], y[order[i : i + bs]]
            residual = kernels.matmul(xb, a.reshape(2, 1)).reshape(-1) - yb
            grad = kernels.matmul(xb, residual.reshape(-1, 1), trans_a=True).reshape(-1)
            grad *= xb.dtype.type(2.0 / len(yb))
            kernels.sgd_update(a, grad, lr=lr)
            weights.append(a.copy())
    w = np.array(weights, np.float64)
    losses = np.mean((x.astype(np.float64) @ w.T - y[:, None]) ** 2, axis=0)
    return LineFit(x, y, w, losses, -(-len(y) // bs))


def frame_steps(steps: int, frames: int) -> np.ndarray:
    """``frames`` distinct step numbers from 0 to ``steps``, dense early (where the line
    moves most) and sparse late: square-root spacing."""
    check_int(frames, "frames", 2)
    if frames > steps + 1:
        raise ValueError(f"frames: {frames} is more than the {steps + 1} states of the fit")
    picked = np.unique(np.round(steps * np.linspace(0, 1, frames) ** 2).astype(int))
    extra = [s for s in range(steps + 1) if s not in set(picked)]
    while len(picked) < frames:  # rounding merged early steps: fill with the first unused
        picked = np.sort(np.append(picked, extra.pop(0)))
    return picked


@dataclass
class SgdAnimation:
    """The animation of ``fit``: frame k draws the line after step ``steps[k]``;
    ``drawn[k]`` holds the (a1, a2) that frame really drew (read back in the tests)."""

    fit: LineFit
    steps: np.ndarray
    figure: Figure
    draw: Any  # draw(k): set the artists to frame k
    drawn: dict[int, tuple[float, float]] = field(default_factory=dict)
    fps: int = 8

    def _write(self, writer: Any, path: Path) -> None:
        """Each frame drawn once and handed to a matplotlib movie writer."""
        with writer.saving(self.figure, path, self.figure.dpi):
            for k in range(len(self.steps)):
                self.draw(k)
                writer.grab_frame()

    def save_gif(self, path: str | Path) -> Path:
        """Write the animation as a GIF (matplotlib's PillowWriter; no ffmpeg), atomically."""
        from matplotlib.animation import PillowWriter

        path = Path(path)
        with tempfile.TemporaryDirectory(prefix="fastcore-cv-gif-") as folder:
            gif = Path(folder) / "animation.gif"
            self._write(PillowWriter(fps=self.fps), gif)
            with atomic_path(path) as tmp:
                shutil.copyfile(gif, tmp)
        return path

    def to_jshtml(self) -> str:
        """The animation as HTML with its own JS player, frames inline as PNG (what
        matplotlib's ``to_jshtml`` makes, through the same ``HTMLWriter``; no ffmpeg)."""
        from matplotlib.animation import HTMLWriter

        with tempfile.TemporaryDirectory(prefix="fastcore-cv-html-") as folder:
            page = Path(folder) / "animation.html"
            self._write(HTMLWriter(fps=self.fps, embed_frames=True, default_mode="once"), page)
            return page.read_text()

    def _repr_html_(self) -> str:
        return self.to_jshtml()


def sgd_animation(fit: LineFit, frames: int = 30, fps: int = 8, dpi: int = 60) -> SgdAnimation:
    """Left: the points and the current line (the true line dashed); right: the loss on all
    points falling, step by step, with the current step marked."""
    from matplotlib.ticker import NullLocator

    steps = frame_steps(len(fit.weights) - 1, frames)
    fig = Figure(figsize=(8, 3.4), dpi=dpi)
    FigureCanvasAgg(fig)
    ax, ax_loss = fig.subplots(1, 2)
    x1 = fit.x[:, 0]
    grid = np.array([x1.min(), x1.max()])
    ax.scatter(x1, fit.y, s=10, color="0.55", label="data")
    ax.plot(grid, TRUE_LINE[0] * grid + TRUE_LINE[1], "k--", lw=1, label="y = 3 x1 + 2")
    (line,) = ax.plot([], [], "C3", lw=2.5, label="current line")
    ax.set(xlabel="x1", ylabel="y", ylim=(fit.y.min() - 1, fit.y.max() + 1))
    ax.legend(loc="upper left", fontsize=8)
    ax_loss.plot(np.arange(len(fit.losses)), fit.losses, color="0.8")
    (trail,) = ax_loss.plot([], [], "C0")
    (dot,) = ax_loss.plot([], [], "C3o")
    ax_loss.set(yscale="log", xlabel="mini-batch steps", ylabel="mean squared error")
    ax_loss.yaxis.set_minor_locator(NullLocator())  # minor log ticks: most of a frame's time
    fig.tight_layout()

    def draw(k: int) -> None:
        s = int(steps[k])
        a1, a2 = fit.weights[s]
        line.set_data(grid, a1 * grid + a2)
        trail.set_data(np.arange(s + 1), fit.losses[: s + 1])
        dot.set_data([s], [fit.losses[s]])
        epoch = s / fit.steps_per_epoch
        ax.set_title(f"step {s} (epoch {epoch:.1f}): y = {a1:.2f} x1 + {a2:.2f}", fontsize=10)
        ax_loss.set_title(f"loss {fit.losses[s]:.3f}", fontsize=10)
        anim.drawn[k] = (float(a1), float(a2))

    anim = SgdAnimation(fit, steps, fig, draw, fps=fps)
    return anim


# -- the matrix product, cell by cell -------------------------------------------------------
def _draw_matrix(ax: Any, m: np.ndarray, left: float, top: float, name: str, **kw: Any) -> None:
    """Draw ``m`` as a grid of numbered cells with its top-left corner at (left, top).
    ``rows``/``cols``: indices to highlight; ``shown``: cells whose number is written
    (default all); ``gid``: a prefix naming each number's Text (gid 'C[i,j]')."""
    from matplotlib.patches import Rectangle

    rows, cols = kw.get("rows", ()), kw.get("cols", ())
    shown = kw.get("shown")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            lit = i in rows or j in cols or (i, j) in kw.get("cells", ())
            face = kw.get("color", "#f4b400") if lit else "white"
            ax.add_patch(Rectangle((left + j, top - i - 1), 1, 1, fc=face, ec="0.3"))
            if shown is None or (i, j) in shown:
                gid = f"{kw['gid']}[{i},{j}]" if "gid" in kw else None
                ax.text(left + j + 0.5, top - i - 0.5, f"{m[i, j]:g}", ha="center",
                        va="center", fontsize=9, gid=gid)  # fmt: skip
    ax.text(left - 0.15, top - m.shape[0] / 2, name, ha="right", va="center", fontsize=11)


@dataclass
class MatrixProductFigure:
    """The step-by-step figure of C = A B, and the numbers it shows: ``c`` is
    ``kernels.matmul(a, b)``, the very array whose entries are written in C's cells."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    figure: Figure

    def _repr_png_(self) -> bytes:
        from fastcore_cv.display import figure_png

        return figure_png(self.figure)


def matrix_product_figure(a: np.ndarray, b: np.ndarray, dpi: int = 80) -> MatrixProductFigure:
    """One panel per cell of C = A B, in order: row i of A and column j of B light up, cell
    (i, j) of C fills in with their dot product, written out below. B sits above C and A to
    its left (the layout of matrixmultiplication.xyz), so row and column meet at the cell."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"b: cannot multiply A {a.shape} by B {b.shape}")
    c = kernels.matmul(a, b)
    n, k, m = a.shape[0], a.shape[1], b.shape[1]
    cells = [(i, j) for i in range(n) for j in range(m)]
    ncols = min(len(cells), m if m > 1 else 3)
    nrows = -(-len(cells) // ncols)
    fig = Figure(figsize=(2.6 * ncols * (k + m + 1) / 6 + 1, 2.4 * nrows * (n + k + 1) / 6 + 1))
    fig.set_dpi(dpi)
    FigureCanvasAgg(fig)
    for step, (i, j) in enumerate(cells):
        ax = fig.add_subplot(nrows, ncols, step + 1)
        done = set(cells[: step + 1])
        _draw_matrix(ax, b, k + 1, n + k + 1, "B", cols=(j,))
        _draw_matrix(ax, a, 0, n, "A", rows=(i,))
        last = step == len(cells) - 1
        _draw_matrix(ax, c, k + 1, n, "C", cells=((i, j),), shown=done, color="#7fc97f",
                     **({"gid": "C"} if last else {}))  # fmt: skip
        terms = " + ".join(f"{a[i, t]:g}·{b[t, j]:g}" for t in range(k))
        ax.text((k + m + 1) / 2, -0.6, f"C[{i},{j}] = {terms} = {c[i, j]:g}", ha="center",
                va="top", fontsize=8)  # fmt: skip
        ax.set_xlim(-1.2, k + m + 1.2)
        ax.set_ylim(-1.4, n + k + 1.2)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle("C = A B: each cell of C is a row of A times a column of B (a dot product)")
    fig.tight_layout()
    return MatrixProductFigure(a, b, c, fig)


# -- tensor ranks from a real photo -----------------------------------------------------------
@dataclass
class TensorRanks:
    """The figure, and the arrays each panel shows (rank k: ``arrays[k]``, sliced from one
    photo; rank 4 is a batch of crops of it)."""

    arrays: list[np.ndarray]
    figure: Figure

    def _repr_png_(self) -> bytes:
        from fastcore_cv.display import figure_png

        return figure_png(self.figure)


def tensor_ranks(image: np.ndarray, batch: int = 4, dpi: int = 70) -> TensorRanks:
    """Rank 0 (one pixel's red value), 1 (a row of red values), 2 (the red channel), 3 (the
    colour photo: height x width x channels) and 4 (a batch of crops: N x H x W x C), each
    titled with its real shape."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"image: expected an RGB uint8 array (H, W, 3), got {img.shape} {img.dtype}"
        )
    h, w = img.shape[:2]
    side = min(h, w) // 2
    tops = np.linspace(0, h - side, batch).astype(int)
    lefts = np.linspace(0, w - side, batch).astype(int)
    crops = np.stack([img[t : t + side, s : s + side] for t, s in zip(tops, lefts, strict=True)])
    arrays = [img[h // 2, w // 2, 0], img[h // 2, :, 0], img[:, :, 0], img, crops]
    fig = Figure(figsize=(15, 3.4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 5)
    names = ["a number", "a vector", "a matrix", "an image", "a batch"]
    axes[0].text(0.5, 0.5, f"{int(arrays[0])}", ha="center", va="center", fontsize=28)
    axes[1].plot(arrays[1], color="C3", lw=1)
    axes[1].set_box_aspect(1)
    axes[2].imshow(arrays[2], cmap="Reds_r")
    for c, color in enumerate(("Reds_r", "Greens_r", "Blues_r")):  # three matrices, stacked
        off = (2 - c) * 0.12 * w
        axes[3].imshow(img[:, :, c], cmap=color, extent=(off, off + w, off + h, off), alpha=0.9)
    axes[3].imshow(img, extent=(0, w, h, 0))
    axes[3].set(xlim=(0, 1.24 * w), ylim=(1.24 * h, 0))
    for n in range(batch):
        off = (batch - 1 - n) * 0.15 * side
        axes[4].imshow(crops[n], extent=(off, off + side, off + side, off))
    axes[4].set(
        xlim=(0, side * (1 + 0.15 * (batch - 1))), ylim=(side * (1 + 0.15 * (batch - 1)), 0)
    )
    for rank, (ax, arr) in enumerate(zip(axes, arrays, strict=True)):
        ax.set_title(f"rank {rank}: {names[rank]}\nshape {tuple(np.shape(arr))}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("tensor rank = the number of axes (one photo, sliced)", fontsize=11)
    fig.tight_layout()
    return TensorRanks(arrays, fig)

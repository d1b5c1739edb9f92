"""The lesson's pictures show the numbers the kernels compute: the SGD GIF's frames and its
last line (vs least squares), the matrix product's cells (vs kernels.matmul and float64
NumPy), the tensor ranks' shapes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.text import Text
from PIL import Image

from fastcore_cv import kernels
from fastcore_cv import lesson_pictures as lp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def line_fit() -> lp.LineFit:
    return lp.sgd_line_fit(*lp.line_data())


def lstsq(fit: lp.LineFit) -> np.ndarray:
    x, y = fit.x.astype(np.float64), fit.y.astype(np.float64)
    return np.linalg.lstsq(x, y, rcond=None)[0]


def test_sgd_fit_is_the_numpy_loop_to_float32_round_off(line_fit):
    """Each step is a = a - lr * 2/n X^T (X a - y) over the same seeded mini-batches."""
    x, y = line_fit.x.astype(np.float64), line_fit.y.astype(np.float64)
    a, ref = lp.START.copy(), [lp.START.copy()]
    for epoch in range(10):
        order = np.random.default_rng([0, epoch]).permutation(len(y))
        for i in range(0, len(y), 10):
            xb, yb = x[order[i : i + 10]], y[order[i : i + 10]]
            a = a - 0.1 * (2 / len(yb)) * xb.T @ (xb @ a - yb)
            ref.append(a.copy())
    # 100 float32 steps on |a| ~ 3: round-off grows to ~100 * eps32 * 3 at most.
    np.testing.assert_allclose(line_fit.weights, np.array(ref), atol=100 * 3 * 1.2e-7 * 4)
    assert line_fit.losses[-1] < line_fit.losses[0] / 20


def test_frame_steps_are_distinct_ordered_and_span_the_fit():
    for steps, frames in ((100, 30), (100, 101), (10, 2), (5, 6)):
        picked = lp.frame_steps(steps, frames)
        assert len(picked) == frames and len(set(picked.tolist())) == frames
        assert picked[0] == 0 and picked[-1] == steps and np.all(np.diff(picked) > 0)
    with pytest.raises(ValueError, match="frames"):
        lp.frame_steps(10, 12)


def test_gif_has_one_frame_per_step_drawn_and_ends_on_the_least_squares_line(line_fit, tmp_path):
    anim = lp.sgd_animation(line_fit, frames=12)
    path = anim.save_gif(tmp_path / "sgd.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 12
        assert gif.size == (480, 204)  # 8 x 3.4 inches at 60 dpi
    assert sorted(anim.drawn) == list(range(12))
    for k, s in enumerate(anim.steps):  # each frame drew the weights of its step
        np.testing.assert_allclose(anim.drawn[k], line_fit.weights[s], rtol=1e-12)
    assert anim.drawn[0] == tuple(lp.START)
    # The last frame's line is where SGD ended: within SGD's own jitter (lr 0.1, batches of 10,
    # noise sd 0.3: ~0.02 here) of the least-squares line, far from where it started.
    best = lstsq(line_fit)
    np.testing.assert_allclose(anim.drawn[11], best, atol=0.05)
    assert np.abs(np.array(anim.drawn[0]) - best).max() > 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_jshtml_embeds_every_frame(line_fit):
    html = lp.sgd_animation(line_fit, frames=5).to_jshtml()
    frames = re.findall(r'frames\[(\d+)\] = "data:image/png;base64,', html)
    assert frames == [str(i) for i in range(5)]
    assert "<script" in html


def drawn_c(fig) -> dict[tuple[int, int], float]:
    cells = {}
    for t in fig.findobj(Text):
        m = re.fullmatch(r"C\[(\d+),(\d+)\]", t.get_gid() or "")
        if m:
            cells[int(m[1]), int(m[2])] = float(t.get_text())
    return cells


@settings(max_examples=6, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
)
def test_matrix_figure_cells_are_kernels_matmul(n, k, m, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-9, 10, (n, k)).astype(np.float32)  # small integers: exact products
    b = rng.integers(-9, 10, (k, m)).astype(np.float32)
    pic = lp.matrix_product_figure(a, b)
    np.testing.assert_array_equal(pic.c, kernels.matmul(a, b))
    np.testing.assert_array_equal(pic.c, a.astype(np.float64) @ b.astype(np.float64))
    cells = drawn_c(pic.figure)
    assert sorted(cells) == [(i, j) for i in range(n) for j in range(m)]
    for (i, j), value in cells.items():
        assert value == pic.c[i, j]
    assert len(pic.figure.axes) == n * m  # one panel per cell of C


def test_matrix_figure_refuses_shapes_that_do_not_multiply():
    with pytest.raises(ValueError, match="cannot multiply A \\(2, 3\\) by B \\(2, 2\\)"):
        lp.matrix_product_figure(np.ones((2, 3)), np.ones((2, 2)))


def test_tensor_ranks_of_a_real_photo():
    import skimage.data

    photo = skimage.data.chelsea()
    pic = lp.tensor_ranks(photo)
    assert [a.ndim for a in pic.arrays] == [0, 1, 2, 3, 4]
    h, w = photo.shape[:2]
    assert pic.arrays[3].shape == (h, w, 3) and pic.arrays[4].shape == (4, h // 2, h // 2, 3)
    titles = [ax.get_title() for ax in pic.figure.axes]
    for rank, (title, arr) in enumerate(zip(titles, pic.arrays, strict=True)):
        assert f"rank {rank}" in title and f"shape {arr.shape}" in title
    with pytest.raises(ValueError, match="image: expected an RGB uint8"):
        lp.tensor_ranks(photo[:, :, 0])


@pytest.mark.slow  # draws and writes all three pictures (~5 s of CPU)
def test_the_example_writes_small_pictures(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lesson_pictures.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"sgd_line_fit.gif", "matrix_product.png", "tensor_ranks.png"}
    for p in tmp_path.iterdir():
        assert 10_000 < p.stat().st_size < 300_000, p
    assert "[[ 58.  64.]\n [139. 154.]]" in r.stdout


def test_the_committed_pictures_are_there_and_small():
    for name in ("sgd_line_fit.gif", "matrix_product.png", "tensor_ranks.png"):
        path = ROOT / "docs" / "pictures" / name
        with Image.open(path) as img:
            img.load()
        assert path.stat().st_size < 300_000

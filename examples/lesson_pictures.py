"""The lesson's pictures: SGD fitting y = a1*x1 + a2 (GIF + inline HTML), the matrix product
cell by cell, and tensor ranks from a real photo (scikit-image's cat, offline).

Everything is drawn from numbers the kernels compute (fastcore_cv/lesson_pictures.py).
``make pictures`` refreshes the small copies in docs/pictures/ that the README shows.

Run: python examples/lesson_pictures.py [--out runs/tour] [--frames 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fastcore_cv import lesson_pictures as lp
from fastcore_cv.output_files import atomic_path

# The matrices of the matrix-product figure: small integers, so every product is exact.
A = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
B = np.array([[7, 8], [9, 10], [11, 12]], np.float32)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tour"), help="output folder")
    parser.add_argument("--frames", type=int, default=30, help="frames of the SGD animation")
    parser.add_argument("--html", action="store_true", help="also write the HTML/JS animation")
    args = parser.parse_args(argv)
    out: Path = args.out
    written = {}

    x, y = lp.line_data()
    fit = lp.sgd_line_fit(x, y)
    anim = lp.sgd_animation(fit, frames=args.frames)
    written["sgd"] = anim.save_gif(out / "sgd_line_fit.gif")
    a1, a2 = anim.drawn[len(anim.steps) - 1]
    best = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    print(f"SGD: last frame y = {a1:.3f} x1 + {a2:.3f}; least squares {best[0]:.3f}, {best[1]:.3f}")
    if args.html:
        with atomic_path(out / "sgd_line_fit.html") as tmp:
            tmp.write_text(anim.to_jshtml())
        written["sgd_html"] = out / "sgd_line_fit.html"

    product = lp.matrix_product_figure(A, B)
    written["matmul"] = lp.save_png(product.figure, out / "matrix_product.png")
    print(f"matrix product: C = kernels.matmul(A, B) =\n{product.c}")

    import skimage.data  # the [data] extra: its photos ship inside the package

    ranks = lp.tensor_ranks(skimage.data.chelsea())
    written["ranks"] = lp.save_png(ranks.figure, out / "tensor_ranks.png")
    print("tensor ranks:", ", ".join(f"{a.ndim}: {a.shape}" for a in ranks.arrays))
    for path in written.values():
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return written


if __name__ == "__main__":
    main()

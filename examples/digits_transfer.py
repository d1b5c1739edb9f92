"""Lesson 2 on the embedded data: a folder of digit images -> a fine-tuned EfficientNet-Lite0.

scikit-learn's 1,797 handwritten digits are written out as class folders (``<out>/digits/3/
0042.png``), the same layout a user's own photos have, then:
1. ImageDataLoaders.from_folder: seeded stratified 80/20 split, 32 px, no augmentation;
2. vision_learner: pretrained body, new kernel-backed head, body frozen;
3. lr_find on the cached body features picks the head's LR (cheap: the body ran once);
4. fine_tune: head on cached features (Numba kernels), then the whole model (torch);
5. interpretation: confusion matrix, most confused pairs, top losses, per-class report.

Run: python examples/digits_transfer.py [--out runs/digits_transfer] [--epochs 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastcore_cv.vision import ImageDataLoaders, write_digits_folder
from fastcore_cv.vision.interpret import ClassificationInterpretation
from fastcore_cv.vision.recipes import DIGITS_RECIPE
from fastcore_cv.vision.transfer import vision_learner


def main(out: Path, epochs: int, base_lr: float | None) -> float:
    start = time.perf_counter()
    root = write_digits_folder(out / "digits")
    dls = ImageDataLoaders.from_folder(root, **DIGITS_RECIPE["data"])
    print(dls)
    learn = vision_learner(dls, progress="plain")
    print(f"features of the frozen body: {learn.features()}")
    learn.fine_tune(epochs, base_lr)
    if learn.lr_find_results:  # base_lr=None: the head's LR came from lr_find
        learn.lr_find_results[0].plot(out / "lr_find.png")
        head_lr = max(learn.frozen_history.batch_lrs)
        print(f"head LR from lr_find on the cached features (median of 5 sweeps): {head_lr:.3g}")
    last = learn.frozen_history.epochs[-1]
    print(f"frozen stage ({last.epoch + 1} epochs on cached features): {last.metrics}")
    interp = ClassificationInterpretation.from_learner(learn)
    print(interp.report_text())
    print("most confused (actual, predicted, count):", interp.most_confused()[:5])
    interp.plot_confusion_matrix(out / "confusion_matrix.png")
    interp.plot_top_losses(12, out / "top_losses.png")
    learn.recorder.plot_loss(out / "loss.png")
    error = learn.validate()["error_rate"]
    print(f"error_rate {error:.4f} in {time.perf_counter() - start:.0f} s; plots in {out}")
    return error


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/digits_transfer"))
    parser.add_argument("--epochs", type=int, default=DIGITS_RECIPE["fine_tune"]["epochs"])
    parser.add_argument("--base-lr", type=float, default=None)
    args = parser.parse_args()
    main(args.out, args.epochs, args.base_lr)

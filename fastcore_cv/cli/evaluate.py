"""``evaluate``: an exported model on a labelled folder -> accuracy, per-class precision and
recall, the confusion matrix (text and PNG) and a JSON report; exit 1 below ``--min-accuracy``
(a CI gate). Torch-free: it runs in the inference-only install."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fastcore_cv.cli.common import one_line_errors, positive
from fastcore_cv.output_files import check_writable
from fastcore_cv.progress import MODES

REPORT, PLOT = "report.json", "confusion_matrix.png"


def _fraction(text: str) -> float:
    """An argparse type: an accuracy in [0, 1] ("0.95", not "95")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1] (e.g. 0.95), got {text!r}")
    return value


@one_line_errors("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from fastcore_cv.export.confusion_plot import plot_confusion
    from fastcore_cv.export.evaluate import evaluate
    from fastcore_cv.export.predictor import Predictor

    out = check_writable(args.out, "--out", folder=True)  # before the work, not after
    for name in (REPORT, PLOT):
        check_writable(out / name, "--out")
    predictor = Predictor(args.model, threads=args.threads)
    result = evaluate(
        predictor, args.folder, batch_size=args.batch_size, workers=args.workers,
        progress=args.progress, threshold=args.threshold,
    )  # fmt: skip
    print(result.text(top=args.top))
    report = result.save_json(out / REPORT)
    title = f"{Path(args.model).name}: accuracy {result.accuracy:.4f} on {result.images} images"
    plot = plot_confusion(result.confusion, result.classes, out / PLOT, title=title)
    print(f"report: {report}  plot: {plot}")
    if args.min_accuracy is not None and result.accuracy < args.min_accuracy:
        print(f"fastcore-cv evaluate: accuracy {result.accuracy:.4f} < --min-accuracy "
              f"{args.min_accuracy} ({result.images} images in {result.folder})",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    from fastcore_cv.export.batch import BATCH_SIZE  # torch-free

    p = sub.add_parser("evaluate", help="accuracy and confusion matrix of an exported model "
                       "on a labelled folder (no torch)")  # fmt: skip
    p.add_argument("model", help="the .onnx file (fp32 or int8)")
    p.add_argument("folder", help="labelled photos: FOLDER/<class>/<image> (or FOLDER/valid/...)")
    p.add_argument("--out", default="runs/evaluation",
                   help=f"folder for {REPORT} and {PLOT} (default %(default)s)")  # fmt: skip
    p.add_argument("--min-accuracy", type=_fraction, metavar="FRACTION",
                   help="exit 1 if the accuracy is below this (e.g. 0.95): a CI gate")  # fmt: skip
    p.add_argument("--threshold", type=_fraction, default=None, metavar="P",
                   help="answers below this probability are 'not sure' (default: the "
                        "file's calibrated threshold)")  # fmt: skip
    p.add_argument("--top", type=positive(int), default=5,
                   help="most confused pairs to print (default %(default)s)")  # fmt: skip
    p.add_argument("--threads", type=positive(int), default=1, help="onnxruntime threads")
    p.add_argument("--batch-size", type=positive(int), default=BATCH_SIZE,
                   help="images per onnxruntime run (default %(default)s)")  # fmt: skip
    p.add_argument("--workers", type=positive(int), default=None,
                   help="decoding+scoring threads (default: cores / --threads)")  # fmt: skip
    p.add_argument("--progress", choices=MODES, default="auto",
                   help="progress display (default %(default)s)")  # fmt: skip
    p.set_defaults(run=_evaluate)

"""``train`` and ``lr-find``: a folder of photos -> a fine-tuned checkpoint, or a suggested LR."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastcore_cv.cli.common import ERRORS, one_line_errors, positive
from fastcore_cv.output_files import check_writable


def _data(args: argparse.Namespace):
    from fastcore_cv.vision import ImageDataLoaders

    return ImageDataLoaders.from_folder(
        args.folder, valid_pct=args.valid_pct, seed=args.seed, size=args.size, bs=args.bs
    )


def _learner(args: argparse.Namespace):
    from fastcore_cv.vision.transfer import vision_learner

    pretrained = args.pretrained if args.pretrained is not None else args.arch != "simple_cnn"
    return vision_learner(_data(args), args.arch, pretrained=pretrained, seed=args.seed)


@one_line_errors("train")
def _train(args: argparse.Namespace) -> int:
    from fastcore_cv.export.checkpoint import sidecar_path

    out = check_writable(args.out, "--out", folder=True)  # before the training, not after
    for name in ("model.pt", "model.json", "model.onnx")[: 3 if args.export else 2]:
        check_writable(out / name, "--out")
    learn = _learner(args)
    print(learn.source_dls)
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=args.freeze_epochs)
    path = _save_or_rescue(learn, out, args.arch)
    if path is None:
        return 1
    print(f"saved {path} + {sidecar_path(path).name} (weights only; no pickle)")
    if args.export:
        from fastcore_cv.export.onnx_export import export_learner

        print(export_learner(learn, out / "model.onnx"))
    return 0


def _save_or_rescue(learn: Any, out: Path, arch: str) -> Path | None:
    """Save the checkpoint in ``out``; if that fails after all the training, save it in a
    rescue folder instead, say where on stderr and return None (the run is not lost)."""
    from fastcore_cv.export.checkpoint import save_checkpoint

    try:
        return save_checkpoint(learn, out / "model.pt", arch=arch)
    except ERRORS as e:
        rescue = _rescue_folder() / "model.pt"
        try:
            saved = f"{save_checkpoint(learn, rescue, arch=arch)} (+ model.json)"
        except ERRORS:  # the sidecar cannot be written: keep the weights at least
            from fastcore_cv.output_files import atomic_save

            saved = f"{atomic_save(learn.model.state_dict(), rescue)} (state_dict only)"
        print(f"fastcore-cv train: error: --out: could not save in {out} ({e}); the trained "
              f"model is saved in {saved} instead", file=sys.stderr)  # fmt: skip
        return None


def _rescue_folder() -> Path:
    """A new ``fastcore-cv-rescue-<time>-*`` folder here, else in the temp folder."""
    prefix = f"fastcore-cv-rescue-{time.strftime('%Y%m%d-%H%M%S')}-"
    for parent in (Path.cwd(), Path(tempfile.gettempdir())):
        with contextlib.suppress(OSError):
            return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    return Path(tempfile.mkdtemp(prefix=prefix))  # raises the OSError that says why


@one_line_errors("lr-find")
def _lr_find(args: argparse.Namespace) -> int:
    if args.plot:
        check_writable(args.plot, "--plot")
    learn = _learner(args)
    result = learn.lr_find()
    print(result)
    print(f"suggested learning rate: {result.suggestion:.2e} ({result.note})")
    if args.plot:
        print(f"plot: {result.plot(args.plot)}")
    return 0


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="photos in FOLDER/<class>/ (or train/ and valid/ inside)")
    p.add_argument(
        "--arch", default="efficientnet_lite0", help="architecture (default %(default)s)"
    )
    p.add_argument("--size", type=positive(int), default=224, help="image size (default 224)")
    p.add_argument("--bs", type=positive(int), default=32, help="batch size (default 32)")
    p.add_argument("--valid-pct", type=float, default=0.2, help="validation share (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="ImageNet weights (default: yes, except simple_cnn)")  # fmt: skip


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``lr-find``."""
    p = sub.add_parser("train", help="fine-tune a pretrained model on a folder of photos")
    _data_options(p)
    p.add_argument("--epochs", type=positive(int), default=3, help="unfrozen epochs (default 3)")
    p.add_argument("--freeze-epochs", type=positive(int), default=1, help="head-only epochs")
    p.add_argument("--lr", type=positive(float), default=None, help="base LR (default: lr_find)")
    p.add_argument("--out", default="runs/model", help="folder for model.pt/.json (and .onnx)")
    p.add_argument("--export", action="store_true", help="also write OUT/model.onnx")
    p.set_defaults(run=_train)

    p = sub.add_parser("lr-find", help="sweep the learning rate and suggest one")
    _data_options(p)
    p.add_argument("--plot", metavar="PNG", help="save the loss-vs-LR plot here")
    p.set_defaults(run=_lr_find)

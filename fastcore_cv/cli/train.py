"""``train`` and ``lr-find``: a folder of photos -> a fine-tuned checkpoint, or a suggested LR.

Both build the same ``vision.recipes.Recipe`` from their flags (whose defaults are the
Recipe's) and the same learner (``vision.transfer.recipe_learner``); ``train`` then asks
fine_tune for its plan (``plan_fine_tune``: the head LR is the median of the seeded lr_find
sweeps ``lr-find`` prints), says which LR goes where, runs it (``run_plan``) and ends as the
lesson does: error rate, diagnosis, most-confused pairs, plots, the next command. torch is
imported inside the commands only, so registering them stays torch-free.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastcore_cv.cli.common import ERRORS, one_line_errors, positive
from fastcore_cv.output_files import check_writable
from fastcore_cv.vision.recipes import Recipe

DEFAULTS = Recipe()  # every flag's default: the recipe's own (vision/recipes.py)
PLOTS = ("lr_find.png", "loss.png", "confusion_matrix.png", "top_losses.png")
MOST_CONFUSED = 5  # pairs shown


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The Recipe the flags describe (a field a command has no flag for keeps its default)."""
    fields = Recipe.__dataclass_fields__
    return Recipe(**{k: getattr(args, k) for k in fields if hasattr(args, k)})


def _check_arch(arch: str) -> None:
    """Refuse an unknown --arch before any work (the names need torch: checked at run time)."""
    from fastcore_cv.vision.models import ARCHS

    if arch not in ARCHS:
        raise ValueError(f"--arch: unknown architecture {arch!r}; expected one of {list(ARCHS)}")


def _learner(recipe: Recipe, folder: str) -> Any:
    from fastcore_cv.distributed.env import group_ready

    if group_ready():  # a rank of a data-parallel run (cli/train_ddp.py)
        from fastcore_cv.distributed.ddp import distributed_learner

        return distributed_learner(folder, recipe)
    from fastcore_cv.vision.transfer import recipe_learner

    return recipe_learner(folder, recipe)


def suggestion_text(learn: Any, lr: float, plot: Path | None) -> str:
    """The lr_find lines ``lr-find`` and ``train`` share: the median of the seeded sweeps
    (``learn.lr_find_results``), each sweep's suggestion, and the plot of the median sweep."""
    results = learn.lr_find_results
    each = ", ".join(f"{r.suggestion:.3g}" for r in results)
    median = min(results, key=lambda r: abs(math.log(r.suggestion / lr)))
    lines = [
        f"{median}",
        f"suggested learning rate: {lr:.3g} (the median of {len(results)} seeded lr_find "
        f"sweeps on the frozen body's features: {each}; {getattr(median, 'note', '')})",
    ]
    if plot is not None:
        lines.append(f"plot: {median.plot(plot)} (the median sweep)")
    return "\n".join(lines)


@one_line_errors("train")
def _train(args: argparse.Namespace) -> int:
    from fastcore_cv.distributed.env import current, group_ready, is_main
    from fastcore_cv.export.checkpoint import sidecar_path

    if (getattr(args, "nproc", 1) > 1 or current() is not None) and not group_ready():
        from fastcore_cv.cli.train_ddp import train_ddp  # start the ranks, or join the group

        return train_ddp(args, _train)
    recipe = recipe_from_args(args)
    _check_arch(recipe.arch)
    out = check_writable(args.out, "--out", folder=True)  # before the training, not after
    for name in ("model.pt", "model.json", *PLOTS, *(("model.onnx",) if args.export else ())):
        check_writable(out / name, "--out")
    learn = _learner(recipe, args.folder)
    print(learn.source_dls)
    plan = learn.plan_fine_tune(**recipe.fine_tune_kwargs())
    lr_plot = None
    if learn.lr_find_results and plan.head_lr_source != "given":
        lr_plot = out / "lr_find.png"
        print(suggestion_text(learn, plan.head_lr, lr_plot))
    else:
        print("lr_find not run: the head LR is given (--head-lr)")
    print(plan)
    learn.run_plan(plan)
    if not is_main():  # rank 0 alone saves, exports and reports
        return 0
    path = _save_or_rescue(learn, out, recipe.arch)
    if path is None:
        return 1
    print(f"saved {path} + {sidecar_path(path).name} (weights only; no pickle)")
    if args.export:
        from fastcore_cv.export.onnx_export import export_learner

        print(export_learner(learn, out / "model.onnx"))
    print(lesson_ending(learn, out, lr_plot))
    onnx, q = out / "model.onnx", shlex.quote
    if args.export:
        print(f"next: fastcore-cv serve {q(str(onnx))}   (then open http://127.0.0.1:8000)")
    else:
        print(f"next: fastcore-cv export {q(str(path))} {q(str(onnx))} --verify {q(args.folder)}")
    return 0


def lesson_ending(learn: Any, out: Path, lr_plot: Path | None = None) -> str:
    """Error rate ("1 image = x%"), diagnosis, most-confused pairs and the plots written
    (``lr_plot``: the lr_find plot already written, listed first)."""
    from fastcore_cv.vision.interpret import ClassificationInterpretation

    lines = []
    plots = [*([lr_plot] if lr_plot else []), learn.recorder.plot_loss(out / "loss.png")]
    if learn.dls.valid is None:
        lines.append("no validation set: no error rate and no interpretation (--valid-pct > 0)")
    else:
        interp = ClassificationInterpretation.from_learner(learn)
        n, wrong = len(interp.targets), int((interp.preds != interp.targets).sum())
        lines.append(
            f"error rate {wrong / n:.2%}: {wrong} of {n} validation images wrong "
            f"(1 image = {100 / n:.2f}%)"
        )
    findings = learn.diagnose()
    lines.append("diagnosis:" + ("".join(f"\n  {f}" for f in findings) or " no problem found"))
    if learn.dls.valid is not None:
        pairs = interp.most_confused()[:MOST_CONFUSED]
        shown = ", ".join(f"{a} -> {p}: {k}" for a, p, k in pairs)
        lines.append(
            "most confused (actual -> predicted: count): "
            + (shown or "none, every validation image is right")
        )
        plots.append(interp.plot_confusion_matrix(out / "confusion_matrix.png"))
        plots.append(interp.plot_top_losses(min(12, n), out / "top_losses.png"))
    lines.append("plots: " + ", ".join(str(p) for p in plots))
    return "\n".join(lines)


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
    recipe = recipe_from_args(args)
    _check_arch(recipe.arch)
    if args.plot:
        check_writable(args.plot, "--plot")
    learn = _learner(recipe, args.folder)
    lr = learn.suggest_lr()
    print(suggestion_text(learn, lr, Path(args.plot) if args.plot else None))
    print(
        "fastcore-cv train uses it as the head LR (the same seeded sweeps; --head-lr to set "
        "another); the body's LR is fine_tune's own rule (--base-lr)"
    )
    return 0


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _count(text: str) -> int:
    """An argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def _data_options(p: argparse.ArgumentParser) -> None:
    d, flag = DEFAULTS, argparse.BooleanOptionalAction
    p.add_argument("folder", help="photos in FOLDER/<class>/ (or train/ and valid/ inside)")
    p.add_argument("--arch", default=d.arch, help="architecture (default %(default)s)")
    p.add_argument(
        "--size", type=positive(int), default=d.size, help="image size (default %(default)s)"
    )
    p.add_argument(
        "--bs", type=positive(int), default=d.bs, help="batch size (default %(default)s)"
    )
    p.add_argument(
        "--valid-pct",
        type=_fraction,
        default=d.valid_pct,
        help="validation share when FOLDER has no valid/ (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=_count,
        default=d.seed,
        help="split, initial weights and shuffles (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=_count,
        default=d.workers,
        help="image-decoding threads; 0: in the main thread (default %(default)s)",
    )
    p.add_argument(
        "--augment",
        action=flag,
        default=d.augment,
        help="random crops, flips and lighting in training (default: yes)",
    )
    p.add_argument(
        "--flip",
        action=flag,
        default=d.flip,
        help="random horizontal flips, if augmenting (default: yes; --no-flip for digits and text)",
    )
    p.add_argument(
        "--oversample",
        action="store_true",
        default=d.oversample,
        help="draw every class equally often in training (imbalanced folders)",
    )
    p.add_argument(
        "--pretrained",
        action=flag,
        default=d.pretrained,
        help="ImageNet weights (default: yes, except simple_cnn)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``lr-find``."""
    d = DEFAULTS
    p = sub.add_parser("train", help="fine-tune a pretrained model on a folder of photos")
    _data_options(p)
    p.add_argument(
        "--epochs",
        type=positive(int),
        default=d.epochs,
        help="unfrozen epochs (default %(default)s)",
    )
    p.add_argument(
        "--freeze-epochs",
        type=positive(int),
        default=d.freeze_epochs,
        help="head-only epochs (default: enough for fine_tune's HEAD_STEPS head "
        "steps, printed before training)",
    )
    p.add_argument(
        "--head-lr",
        "--lr",
        dest="head_lr",
        type=positive(float),
        default=d.head_lr,
        help="the head's LR (default: the median of the seeded lr_find sweeps, "
        "what `fastcore-cv lr-find` prints); sets the head's LR only",
    )
    p.add_argument(
        "--base-lr",
        type=positive(float),
        default=d.base_lr,
        help="the unfrozen stage's base LR, halved, the body's from base/2/lr-mult "
        "up to base/2 for the head (default: fine_tune's BASE_LR)",
    )
    p.add_argument(
        "--lr-mult",
        type=positive(float),
        default=d.lr_mult,
        help="head LR / first body group's LR when unfrozen (default: fine_tune's)",
    )
    p.add_argument(
        "--out", default="runs/model", help="folder for model.pt/.json, the plots (and model.onnx)"
    )
    p.add_argument("--export", action="store_true", help="also write OUT/model.onnx")
    p.add_argument(
        "--freeze-to",
        type=int,
        default=d.freeze_to,
        metavar="N",
        help="the unfrozen stage trains body blocks N.. and the head only, on the first N "
        "blocks' outputs cached once (per epoch with --augment); N < 0 counts from the end",
    )
    p.add_argument(
        "--nproc",
        type=positive(int),
        default=1,
        help="data-parallel ranks on this machine (torch.distributed, gloo); --bs is the "
        "global batch (default %(default)s; torchrun's variables override it)",
    )
    p.set_defaults(run=_train)

    p = sub.add_parser("lr-find", help="sweep the learning rate and suggest one (train's head LR)")
    _data_options(p)
    p.add_argument("--plot", metavar="PNG", help="save the loss-vs-LR plot here")
    p.set_defaults(run=_lr_find)

"""``fastcore-cv train`` / ``lr-find`` run the API's recipe (vision/recipes.py ``Recipe``,
fine_tune's plan) and say which LR went where; ``train`` ends as the lesson does. The real
command, as a subprocess, on real texture photos (scikit-image) with the pretrained
EfficientNet-Lite0 at 32 px."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastcore_cv.cli import build_parser, main
from fastcore_cv.cli.train import recipe_from_args
from fastcore_cv.vision.recipes import Recipe

pytest.importorskip("skimage")

FLAGS = ["--size", "32", "--bs", "16"]  # 30 training images: a few batches per epoch
RECIPE = Recipe(size=32, bs=16, epochs=1)


def run(*argv: object) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "fastcore_cv", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> Path:
    """Real photo crops: brick/grass/gravel, 10 per class in train/ and in valid/, 96 px."""
    from fastcore_cv.vision.datasets import write_texture_folder

    return write_texture_folder(tmp_path_factory.mktemp("textures"), size=96, stride=96)


@pytest.fixture(scope="module")
def trained(textures, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("run") / "model"
    return out, run("train", textures, *FLAGS, "--epochs", "1", "--out", out).stdout


def line(out: str, prefix: str) -> str:
    found = [x for x in out.splitlines() if x.startswith(prefix)]
    assert len(found) == 1, (prefix, out)
    return found[0]


def test_the_flags_defaults_are_the_recipes():
    parse = build_parser().parse_args
    assert recipe_from_args(parse(["train", "photos"])) == Recipe()
    assert recipe_from_args(parse(["lr-find", "photos"])) == Recipe()
    assert recipe_from_args(parse(["train", "photos", *FLAGS, "--epochs", "1"])) == RECIPE
    # No LR and no frozen-epoch count unless asked: fine_tune's rules decide (lr_find's
    # median for the head, HEAD_STEPS head steps), not the old --freeze-epochs 1.
    assert Recipe().fine_tune_kwargs() == {"epochs": 3}
    args = parse(["train", "p", "--lr", "0.01", "--base-lr", "0.3", "--lr-mult", "4"])
    assert (args.head_lr, args.base_lr, args.lr_mult) == (0.01, 0.3, 4.0)  # --lr: the head's


def test_the_data_flags_reach_the_loaders(textures):
    from fastcore_cv.vision import ImageDataLoaders

    argv = ["train", textures / "train", "--size", "32", "--oversample", "--no-augment",
            "--workers", "2", "--valid-pct", "0.3", "--seed", "7"]  # fmt: skip
    recipe = recipe_from_args(build_parser().parse_args(list(map(str, argv))))
    dls = ImageDataLoaders.from_folder(textures / "train", **recipe.data_kwargs())
    assert dls.train_transform is None and dls.num_workers == 2 and dls.seed == 7
    assert dls.oversample_counts is not None and dls.train.oversample
    assert dls.counts["valid"] == {"brick": 3, "grass": 3, "gravel": 3}  # 30% of 10 each


@pytest.mark.parametrize(
    "flag, value",
    [("--valid-pct", "1.5"), ("--valid-pct", "nan"), ("--workers", "-1"), ("--seed", "-3"),
     ("--head-lr", "0"), ("--base-lr", "inf"), ("--freeze-epochs", "0"), ("--epochs", "x")],
)  # fmt: skip
def test_bad_flags_are_usage_errors_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "photos", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fastcore-cv train: error: argument {flag}")


def test_an_unknown_arch_is_refused_before_any_work(textures, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(textures), "--arch", "resnet9000", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastcore-cv train: error: --arch: unknown")


@pytest.mark.slow  # a real training run, as a subprocess (~15-25 s on 2 shared cores)
def test_train_says_which_lr_went_where_and_follows_it(trained):
    from fastcore_cv.learner.fine_tune import BASE_LR, HEAD_STEPS, LR_MULT

    _, out = trained
    sweeps = re.fullmatch(
        r"head LR (\S+) \(median of 5 seeded lr_find sweeps: (.+)\)", line(out, "head LR ")
    )
    assert sweeps, out
    each = [float(s) for s in sweeps[2].split(", ")]
    assert sweeps[1] == f"{sorted(each)[2]:.3g}"  # the median of the five printed
    assert f"suggested learning rate: {sweeps[1]} (the median of 5" in out
    frozen = re.fullmatch(
        r"frozen stage: (\d+) epoch\(s\) x (\d+) batch\(es\) = (\d+) head steps \(enough for "
        rf"HEAD_STEPS={HEAD_STEPS}\), one-cycle at the head LR",
        line(out, "frozen stage: "),
    )
    epochs, batches, steps = map(int, frozen.groups())
    assert steps == epochs * batches >= HEAD_STEPS and (epochs - 1) * batches < HEAD_STEPS
    hi = BASE_LR / 2
    assert line(out, "unfrozen stage: ").startswith(
        f"unfrozen stage: 1 epoch(s), LRs slice({hi / LR_MULT:.3g}, {hi:.3g}): "
    )
    # The epoch tables show the plan was followed: `epochs` frozen rows, then 1 unfrozen.
    lines = out.splitlines()
    headers = [i for i, x in enumerate(lines) if x.startswith("epoch ")]
    assert len(headers) == 2 and headers[1] - headers[0] - 1 == epochs
    assert lines[headers[1] + 1].startswith("0 ") and lines[headers[1] + 2].startswith("saved ")


@pytest.mark.slow  # a real training run, as a subprocess (~15-25 s on 2 shared cores)
def test_train_ends_the_way_the_lesson_ends(trained, textures):
    model, out = trained
    error = re.fullmatch(
        r"error rate (\d+\.\d\d)%: (\d+) of 30 validation images wrong \(1 image = 3\.33%\)",
        line(out, "error rate "),
    )
    assert error and float(error[1]) == pytest.approx(100 * int(error[2]) / 30, abs=0.005)
    assert int(error[2]) <= 6  # a trained model on three distinct textures: <= 20% error
    diagnosis = line(out, "diagnosis:")
    lines = out.splitlines()
    after = lines[lines.index(diagnosis) + 1 :]
    findings = after[: next(i for i, x in enumerate(after) if not x.startswith("  ["))]
    assert (diagnosis == "diagnosis: no problem found") != bool(findings)
    assert all(re.fullmatch(r"  \[[a-z_]+\] \S.*", f) for f in findings)  # [code] message
    confused = line(out, "most confused (actual -> predicted: count): ")
    pairs = confused.split(": ", 1)[1]
    if int(error[2]) == 0:
        assert pairs == "none, every validation image is right"
    else:  # the counts add up to the images wrong
        counts = [int(p.rsplit(": ", 1)[1]) for p in pairs.split(", ")]
        assert sum(counts) == int(error[2]) and counts == sorted(counts, reverse=True)
    plots = line(out, "plots: ").removeprefix("plots: ").split(", ")
    names = ["lr_find.png", "loss.png", "confusion_matrix.png", "top_losses.png"]
    assert plots == [str(model / name) for name in names]
    assert all(Path(p).stat().st_size > 1000 for p in plots)
    assert f"plot: {model / 'lr_find.png'} (the median sweep)" in out
    assert lines[-1] == (
        f"next: fastcore-cv export {model / 'model.pt'} {model / 'model.onnx'} --verify {textures}"
    )
    assert (model / "model.pt").is_file() and (model / "model.json").is_file()


@pytest.mark.slow  # the recipe's sweeps on EfficientNet-Lite0 features, and lr-find's
def test_api_cli_and_lr_find_choose_the_same_head_lr(trained, textures, tmp_path):
    """The Python API with the same Recipe plans exactly what the command printed, and
    ``lr-find`` prints the suggestion ``train`` used."""
    from fastcore_cv.vision.transfer import recipe_learner

    _, out = trained
    learn = recipe_learner(textures, RECIPE, progress="silent")
    plan = learn.plan_fine_tune(**RECIPE.fine_tune_kwargs())
    assert str(plan) in out  # head LR, its sweeps, the frozen stage and the body's slice
    suggested = line(out, "suggested learning rate: ")
    found = run("lr-find", textures, *FLAGS, "--plot", tmp_path / "lr.png").stdout
    assert line(found, "suggested learning rate: ") == suggested
    assert suggested.startswith(f"suggested learning rate: {plan.head_lr:.3g} (")
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_train_recipe_runs_the_plan_it_keeps(textures, one_thread):
    """The API's one call, ``train_recipe``: the recipe's data, model and plan (here a given
    head LR and frozen epochs, simple_cnn: no sweep, a second of training)."""
    from fastcore_cv.learner.fine_tune import BASE_LR
    from fastcore_cv.vision.transfer import train_recipe

    recipe = Recipe(size=32, bs=16, arch="simple_cnn", epochs=1, freeze_epochs=3, head_lr=0.05)
    learn = train_recipe(textures, recipe, progress="silent")
    plan = learn.fine_tune_plan
    assert (plan.head_lr, plan.head_lr_source, plan.freeze_epochs) == (0.05, "given", 3)
    assert plan.body_lrs[1] == pytest.approx(BASE_LR / 2) and not learn.frozen
    assert len(learn.frozen_history.epochs) == 3 and len(learn.recorder.history.epochs) == 1
    assert not any(p.requires_grad is False for p in learn.model.parameters())

"""`fastcore-cv demo`, the main job, run for real end to end (one unfrozen epoch to keep the
suite short; `make demo` runs eight): every step's file, figure and report section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastcore_cv import demo
from fastcore_cv.cli import main
from fastcore_cv.export import Predictor

pytestmark = pytest.mark.slow  # the whole demo, for real

PLOTS = ("lr_find.png", "loss.png", "confusion_matrix.png", "top_losses.png")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    report = demo.run(out, epochs=1, latency_runs=5)
    return out, report


def test_demo_writes_plots_models_and_report(ran):
    out, _ = ran
    for png in PLOTS:
        with Image.open(out / png) as img:
            assert img.width > 100 and img.height > 100, png
    for name in ("model.pt", "model.onnx", "model.int8.onnx"):
        assert (out / name).stat().st_size > 1_000_000, name
    assert json.loads((out / "model.json").read_text())["classes"] == [str(d) for d in range(10)]
    assert len(list((out / "digits").glob("*/*.png"))) == 1797
    assert not list(out.rglob("*.tmp*")), "no temporary file may be left behind"


def test_demo_report_has_every_step_and_the_figures(ran):
    out, report = ran
    text = (out / "report.md").read_text()
    for step in range(1, 8):
        assert f"## {step}. " in text
    for png in PLOTS:
        assert f"![{png}]({png})" in text
    assert "| onnxruntime int8 | image -> label |" in text  # the latency table is a table
    figures = json.loads((out / "report.json").read_text())
    assert figures == json.loads(json.dumps(report.figures, default=str))
    assert figures["images"] == 1797 and figures["bad_images"] == 0
    assert 0 <= figures["error_rate"] <= 1
    assert figures["parity_max_abs_diff"] <= 1e-4
    assert len(figures["latency_ms"]) == 6
    for stats in figures["latency_ms"].values():
        assert 0 < stats["p50_ms"] <= stats["p99_ms"]


def test_demo_cleaning_step_accepts_only_sure_suggestions(ran):
    """Step 8 relabels only what the out-of-fold head is sure of, and finds planted errors:
    the body learnt the digits' true labels, so most planted files must be flagged."""
    out, report = ran
    assert "## 8. " in (out / "report.md").read_text()
    c = report.figures["clean"]
    assert c["planted"] == demo.CLEAN_PLANTED
    assert c["found"] >= c["planted"] // 2  # recall at least 50% (62 of 72 measured)
    assert c["accepted"] <= c["flagged"] and c["accepted_right"] <= c["accepted"]
    assert c["relabelled"] == c["accepted"]
    assert 0 <= c["error_after"] <= 1 and 0 <= c["error_before"] <= 1


def test_demo_onnx_model_scores_like_the_learner(ran):
    """The exported fp32 model on the validation photos must reproduce the Learner's error
    rate (same weights, same preprocessing): at most one image apart."""
    _, report = ran
    f = report.figures
    valid = 359  # 20% of 1797, stratified
    assert abs((1 - f["fp32_accuracy"]) - f["error_rate"]) <= 1 / valid + 1e-9
    assert abs(f["int8_accuracy"] - f["fp32_accuracy"]) <= 0.05


def test_demo_prediction_matches_a_fresh_predictor(ran):
    """Step 6's photo through a fresh Predictor: the label and probability the report states
    (report.json and report.md) are the ones the saved model files give."""
    out, report = ran
    f = json.loads((out / "report.json").read_text())
    photo = Path(f["photo"])
    assert photo.parent.parent == out / "digits" and photo.parent.name == f["photo_class"]
    step6 = (out / "report.md").read_text().split("## 6. ")[1].split("## 7. ")[0]
    assert f"photo: {photo} (true class {f['photo_class']})" in step6
    for name, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        p = Predictor(out / file, threads=1).predict(photo, top_k=3)
        assert p.label in [str(d) for d in range(10)]
        assert np.isclose(p.probabilities.sum(), 1, atol=1e-5)
        assert p.label == f[f"{name}_prediction"] == report.figures[f"{name}_prediction"]
        # The same file, input and thread count: at most float32 round-off (probability <= 1).
        eps = float(np.finfo(np.float32).eps)
        assert p.probability == pytest.approx(f[f"{name}_probability"], rel=0, abs=16 * eps)
        line = next(x for x in step6.splitlines() if x.startswith(f"  {name}: "))
        assert line.startswith(f"  {name}: {p.label} ({f[f'{name}_probability']:.1%}; top 3: ")
        top3 = line.split("top 3: ")[1].rstrip(")").split(", ")
        assert [t.split()[0] for t in top3] == [label for label, _ in p.top_k]
    assert report.figures["fp32_prediction"] in [str(d) for d in range(10)]


def test_the_demo_default_is_the_digits_recipe():
    """The CLI takes the demo's defaults from fastcore_cv.demo (one place), and those follow
    the measured recipe in vision.transfer."""
    from fastcore_cv.cli import build_parser
    from fastcore_cv.vision.recipes import DIGITS_RECIPE

    args = build_parser().parse_args(["demo"])
    assert (args.out, args.epochs, args.seed, args.latency_runs) == (
        demo.OUT,
        demo.EPOCHS,
        demo.SEED,
        demo.LATENCY_RUNS,
    )
    assert DIGITS_RECIPE["fine_tune"]["epochs"] == demo.EPOCHS


def test_demo_command_line_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--epochs", "0"])
    assert e.value.code == 2
    assert "--epochs" in capsys.readouterr().err

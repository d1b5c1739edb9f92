"""``evaluate`` (export/evaluate.py, cli/evaluate.py): the metrics against a float64 hand
count on random labels, the real model on a labelled folder against one-at-a-time answers,
the JSON report and PNG, and the --min-accuracy gate's exit code."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fastcore_cv.cli import main
from fastcore_cv.export.evaluate import (
    class_scores,
    confusion_matrix,
    evaluate,
    labelled_files,
    most_confused,
)
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.vision.decode import ImageError


@st.composite
def labels(draw):
    """(actual, predicted, n_classes): random class indices, classes that never occur too."""
    c = draw(st.integers(1, 6))
    n = draw(st.integers(1, 60))
    index = st.integers(0, c - 1)
    actual = draw(st.lists(index, min_size=n, max_size=n))
    predicted = draw(st.lists(index, min_size=n, max_size=n))
    return np.array(actual), np.array(predicted), c


@settings(max_examples=200, deadline=None)
@given(labels())
def test_metrics_match_a_float64_hand_count(case):
    actual, predicted, c = case
    cm = confusion_matrix(actual, predicted, c)
    names = [f"k{i}" for i in range(c)]
    assert cm.sum() == len(actual)
    for k, s in enumerate(class_scores(cm, names)):
        tp = sum(1.0 for a, p in zip(actual, predicted, strict=True) if a == p == k)
        pred_k = sum(1.0 for p in predicted if p == k)
        real_k = sum(1.0 for a in actual if a == k)
        want_p = tp / pred_k if pred_k else math.nan
        want_r = tp / real_k if real_k else math.nan
        fp_fn = pred_k + real_k - 2 * tp
        want_f1 = 2 * tp / (2 * tp + fp_fn) if tp + fp_fn else math.nan
        for got, want in ((s.precision, want_p), (s.recall, want_r), (s.f1, want_f1)):
            assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 4e-16, (k, s)
        assert s.support == real_k
    for a, p, n in most_confused(cm, names):
        assert a != p and n == sum(1 for x, y in zip(actual, predicted, strict=True)
                                   if names[x] == a and names[y] == p)  # fmt: skip
    counts = [n for _, _, n in most_confused(cm, names)]
    assert counts == sorted(counts, reverse=True)
    off = int(cm.sum() - np.trace(cm))
    assert sum(counts) == off


def test_confusion_matrix_refuses_bad_labels():
    with pytest.raises(ValueError, match="actual"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="shapes"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)


@pytest.fixture(scope="module")
def labelled(photos, tmp_path_factory) -> Path:
    """The photo crops with two of them filed under the wrong class and one corrupt file."""
    root = tmp_path_factory.mktemp("labelled") / "photos"
    shutil.copytree(photos, root)
    shutil.move(root / "cat" / "001.jpg", root / "coffee" / "was_cat_001.jpg")
    shutil.move(root / "astronaut" / "002.jpg", root / "cat" / "was_astronaut_002.jpg")
    (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return root


def test_evaluation_counts_what_one_at_a_time_predictions_say(exported, labelled):
    predictor = Predictor(exported.path)
    result = evaluate(predictor, labelled, batch_size=4, workers=2, progress="silent")
    root, files, targets = labelled_files(labelled, predictor.classes)
    want = np.zeros((3, 3), np.int64)
    unreadable, sure, sure_right = [], 0, 0
    for f, t in zip(files, targets, strict=True):
        try:
            p = predictor.predict(f)
        except ImageError:
            unreadable.append(str(f))
            continue
        want[t, p.index] += 1
        sure += p.accepted
        sure_right += p.accepted and p.index == t
    assert (result.accepted, result.accepted_right) == (sure, sure_right)
    assert result.threshold == predictor.threshold
    np.testing.assert_array_equal(result.confusion, want)
    assert [p for p, _ in result.unreadable] == unreadable == [str(root / "coffee/broken.jpg")]
    assert result.images == len(files) - 1
    assert result.accuracy == pytest.approx(np.trace(want) / want.sum(), abs=1e-15)
    assert len(result.mistakes) == want.sum() - np.trace(want) >= 2  # the two misfiled crops
    assert {m["path"] for m in result.mistakes} >= {
        str(root / "coffee/was_cat_001.jpg"),
        str(root / "cat/was_astronaut_002.jpg"),
    }


def test_cli_writes_report_and_plot_and_gates_on_min_accuracy(exported, labelled, tmp_path,
                                                              capsys):  # fmt: skip
    out = tmp_path / "eval"
    code = main(["evaluate", str(exported.path), str(labelled), "--out", str(out),
                 "--min-accuracy", "0.5", "--progress", "silent"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == exported.dls.classes
    assert sum(map(sum, report["confusion_matrix"])) == report["images"] == 30
    assert 0.5 <= report["accuracy"] <= 28 / 30  # two crops are filed under the wrong class
    assert f"accuracy {report['accuracy']:.4f}" in text and "most confused" in text
    assert {r["name"] for r in report["per_class"]} == set(report["classes"])
    with Image.open(out / "confusion_matrix.png") as png:
        assert png.format == "PNG" and min(png.size) > 100
    # the gate: one line on stderr and exit 1 when the accuracy falls short
    code = main(["evaluate", str(exported.path), str(labelled), "--out", str(out),
                 "--min-accuracy", "1", "--progress", "silent"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "< --min-accuracy 1.0" in err[0]


def test_cli_checks_outputs_before_the_work(exported, labelled, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("keep me")
    code = main(["evaluate", str(exported.path), str(labelled), "--out", str(blocker)])
    err = capsys.readouterr().err
    assert code == 1 and "--out" in err and blocker.read_text() == "keep me"
    code = main(["evaluate", str(exported.path), str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o")])  # fmt: skip
    assert code == 1 and "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_class_the_model_does_not_know_is_named(exported, photos, tmp_path, capsys):
    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    (root / "dog").mkdir()
    shutil.copy(next((root / "cat").glob("*.jpg")), root / "dog" / "d.jpg")
    code = main(["evaluate", str(exported.path), str(root), "--out", str(tmp_path / "o")])
    assert code == 1 and "['dog']" in capsys.readouterr().err


def test_int8_model_and_a_split_folder(int8, photos, tmp_path):
    """An int8 file evaluates the same way; a folder with train/ and valid/ means valid/."""
    split = tmp_path / "data"
    shutil.copytree(photos, split / "valid")
    shutil.copytree(photos, split / "train")
    result = evaluate(Predictor(int8.path), split, progress="silent", threshold=0.0)
    assert result.folder == split / "valid" and result.images == 30
    assert result.coverage == 1.0 and result.accepted_accuracy == result.accuracy  # all sure
    assert result.accuracy >= 0.8  # the model fits these crops; int8 agrees with fp32 on most

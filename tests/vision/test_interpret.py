"""Interpretation: predictions computed once; confusion matrix, most_confused, top losses and the
per-class report agree with hand-computed values and scikit-learn; plots are real PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastcore_cv.vision.interpret import ClassificationInterpretation

CLASSES = ["cat", "dog", "fox"]
# Four items: two right, a dog taken for a cat, a fox taken for a dog.
PROBS = torch.tensor(
    [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float32
)
TARGETS = torch.tensor([0, 1, 1, 2])


@pytest.fixture
def interp():
    return ClassificationInterpretation(PROBS, TARGETS, CLASSES, items=["a", "b", "c", "d"])


def test_confusion_and_most_confused(interp):
    np.testing.assert_array_equal(interp.confusion_matrix(), [[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert interp.most_confused() == [("dog", "cat", 1), ("fox", "dog", 1)]
    assert interp.most_confused(min_val=2) == []


def test_top_losses_are_sorted_with_probabilities(interp):
    top = interp.top_losses(2)
    assert [t.index for t in top] == [1, 3]  # both lose -log 0.3: ties keep their order
    assert top[0].loss == pytest.approx(-math.log(0.3), rel=1e-6)
    assert (top[0].actual, top[0].predicted, top[0].item) == ("dog", "cat", "b")
    assert top[0].prob_predicted == pytest.approx(0.6) and top[0].prob_actual == pytest.approx(0.3)
    assert len(interp.top_losses()) == 4
    with pytest.raises(ValueError, match="k"):
        interp.top_losses(0)


def test_report_matches_scikit_learn(interp):
    metrics = pytest.importorskip("sklearn.metrics")
    p, r, f, s = metrics.precision_recall_fscore_support(
        TARGETS.numpy(), PROBS.argmax(1).numpy(), labels=[0, 1, 2], zero_division=np.nan
    )
    rows = interp.report()
    np.testing.assert_allclose([x.precision for x in rows], p)
    np.testing.assert_allclose([x.recall for x in rows], r)
    np.testing.assert_allclose([x.f1 for x in rows], f)
    assert [x.support for x in rows] == list(s)
    assert math.isnan(rows[2].precision)  # never predicted: unknown, not 0
    assert "error_rate 0.5000" in interp.report_text()


def test_plots_are_png_files(interp, tmp_path):
    cm_path = interp.plot_confusion_matrix(tmp_path / "cm.png")
    norm_path = interp.plot_confusion_matrix(tmp_path / "cm_norm.png", normalize=True)
    top_path = interp.plot_top_losses(3, tmp_path / "sub" / "top.png")  # items not images
    for path in (cm_path, norm_path, top_path):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 200


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="probs"):
        ClassificationInterpretation(torch.empty(0, 3), torch.empty(0), CLASSES)
    with pytest.raises(ValueError, match="classes"):
        ClassificationInterpretation(PROBS, TARGETS, ["a", "b"])
    with pytest.raises(ValueError, match="probs"):
        ClassificationInterpretation(PROBS[:2], TARGETS, CLASSES)


def test_items_that_do_not_line_up_are_dropped():
    interp = ClassificationInterpretation(PROBS, TARGETS, CLASSES, items=["only one"])
    assert interp.items is None and interp.top_losses(1)[0].item is None

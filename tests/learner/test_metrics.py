"""Metrics over a whole validation set, checked against NumPy and scikit-learn."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_score, recall_score

from fastcore_cv.learner.metrics import (
    accuracy,
    confusion_matrix,
    error_rate,
    metric_name,
    precision_recall,
)


def random_preds(n, c, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)).astype(np.float32), rng.integers(0, c, n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 97), c=st.integers(1, 11), seed=st.integers(0, 2**16))
def test_accuracy_and_error_rate_match_numpy(n, c, seed):
    preds, targets = random_preds(n, c, seed)
    want = float(np.mean(preds.argmax(1) == targets))
    assert accuracy(torch.from_numpy(preds), torch.from_numpy(targets)) == pytest.approx(want)
    assert error_rate(preds, targets) == pytest.approx(1 - want)  # numpy accepted too


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 97), c=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_precision_recall_match_sklearn(n, c, seed):
    preds, targets = random_preds(n, c, seed)
    labels = list(range(c))
    p, r = precision_recall(preds, targets)
    pred_cls = preds.argmax(1)
    sk_p = precision_score(targets, pred_cls, labels=labels, average=None, zero_division=np.nan)
    sk_r = recall_score(targets, pred_cls, labels=labels, average=None, zero_division=np.nan)
    np.testing.assert_allclose(p, sk_p, equal_nan=True)
    np.testing.assert_allclose(r, sk_r, equal_nan=True)
    np.testing.assert_array_equal(
        confusion_matrix(preds, targets), sk_confusion(targets, pred_cls, labels=labels)
    )


def test_unseen_class_is_nan_not_zero():
    preds = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]])
    p, r = precision_recall(preds, torch.tensor([0, 1, 1]))
    np.testing.assert_allclose(p, [0.5, 1.0, np.nan])  # class 2 never predicted
    np.testing.assert_allclose(r, [1.0, 0.5, np.nan])  # class 2 never present


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="preds"):
        accuracy(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="targets"):
        accuracy(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="preds"):
        accuracy(torch.zeros(0, 2), torch.zeros(0))
    with pytest.raises(ValueError, match="targets"):
        confusion_matrix(torch.zeros(2, 2), torch.tensor([0, 5]))


def test_metric_names():
    import functools

    assert metric_name(accuracy) == "accuracy"
    assert metric_name(functools.partial(error_rate)) == "error_rate"

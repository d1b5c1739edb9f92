"""Out-of-fold probabilities and label issues: each file is scored by a head that never saw it.

The head is a linear softmax classifier (multinomial logistic regression, as the "linear"
head of vision/models.py) on the standardised body features, trained k times on a seeded
stratified k-fold split; the fold left out gets its probabilities. cleanlab then flags the
likely label errors from those probabilities (confident learning), and its label quality
(the probability of the given label, "self confidence") ranks every file.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from fastcore_cv.clean.inventory import CleanError

FOLDS = 5
SEED = 42


@dataclass
class Scores:
    """Per file (rows in the order given): OOF probabilities, the suggested class, the label
    quality in [0, 1] (low = suspect), and cleanlab's label-issue flag."""

    probabilities: np.ndarray
    predicted: np.ndarray
    quality: np.ndarray
    issue: np.ndarray
    folds: int
    seconds: float


def oof_probabilities(
    features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = FOLDS, seed: int = SEED
) -> tuple[np.ndarray, int]:
    """(out-of-fold probabilities (N, n_classes), folds used). ``folds`` shrinks to the size
    of the smallest class; a class with one file cannot be scored out of fold (CleanError)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=n_classes)
    present = counts[counts > 0]
    if len(present) < 2:
        raise CleanError("the folder needs at least 2 classes with images to score them")
    k = int(min(folds, present.min()))
    if k < 2:
        lonely = [int(c) for c in np.flatnonzero(counts == 1)]
        raise CleanError(
            f"class index(es) {lonely} hold one image; out-of-fold scoring needs 2 per class"
        )
    probs = np.zeros((len(labels), n_classes), np.float64)
    split = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, held in split.split(features, labels):
        scaler = StandardScaler().fit(features[train])
        head = LogisticRegression(C=0.1, max_iter=500)
        with warnings.catch_warnings():  # lbfgs may stop at max_iter: the ranking still holds
            warnings.simplefilter("ignore")
            head.fit(scaler.transform(features[train]), labels[train])
        probs[np.ix_(held, head.classes_)] = head.predict_proba(scaler.transform(features[held]))
    return probs, k


def score(
    features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = FOLDS, seed: int = SEED
) -> Scores:
    """OOF probabilities, then cleanlab's label issues and label quality scores."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    start = time.perf_counter()
    labels = np.asarray(labels, np.int64)
    probs, k = oof_probabilities(features, labels, n_classes, folds, seed)
    used = np.flatnonzero(np.bincount(labels, minlength=n_classes))  # cleanlab: no empty class
    remap = np.full(n_classes, -1)
    remap[used] = np.arange(len(used))
    sub = probs[:, used] / probs[:, used].sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        issue = find_label_issues(remap[labels], sub, filter_by="prune_by_noise_rate")
        quality = get_label_quality_scores(remap[labels], sub, method="self_confidence")
    return Scores(
        probs,
        probs.argmax(axis=1),
        np.asarray(quality, np.float64),
        np.asarray(issue, bool),
        k,
        time.perf_counter() - start,
    )

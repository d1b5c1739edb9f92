"""Score a folder: decode check, body features once, out-of-fold label scores, duplicates;
the result is the JSON-able dict ``session.CleanSession`` caches in scores.json."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastcore_cv.clean import require_extra
from fastcore_cv.clean.duplicates import duplicate_of, perceptual_hashes
from fastcore_cv.clean.features import load_source
from fastcore_cv.clean.inventory import CleanError, Item, model_fingerprint
from fastcore_cv.clean.score import score
from fastcore_cv.vision.verify import find_bad_images


def score_folder(
    folder: Path,
    model: str | os.PathLike,
    classes: list[str],
    items: list[Item],
    *,
    folds: int = 5,
    seed: int = 42,
    threads: int = 1,
) -> dict[str, Any]:
    """Every item's predicted class, probability, score (1 - probability of its label, out of
    fold) and issue ("undecodable", "duplicate", "label" or None), with timings."""
    require_extra()
    source = load_source(model, threads)
    paths = [folder / i.path for i in items]
    t0 = time.perf_counter()
    bad = {b.path: b for b in find_bad_images(paths)}
    good = [k for k, p in enumerate(paths) if p not in bad]
    if len(good) < 2:
        raise CleanError(f"{folder}: fewer than 2 decodable images to score")
    t1 = time.perf_counter()
    feats, feature_s = source.features([paths[k] for k in good])
    index = {c: n for n, c in enumerate(classes)}
    labels = np.array([index[items[k].label] for k in good])
    scores = score(feats, labels, len(classes), folds, seed)
    t2 = time.perf_counter()
    bits = perceptual_hashes([paths[k] for k in good])
    dups = duplicate_of(
        [i.path for i in items], [i.sha256 for i in items], bits, [p not in bad for p in paths]
    )
    t3 = time.perf_counter()
    row = {k: n for n, k in enumerate(good)}
    out = []
    for k, item in enumerate(items):
        entry: dict[str, Any] = {
            "file": item.to_dict(),
            "duplicate_of": None,
            "duplicate_kind": None,
            "error": None,
        }
        if k in dups:
            entry["duplicate_of"] = items[dups[k][0]].path
            entry["duplicate_kind"] = dups[k][1]
        if paths[k] in bad:
            b = bad[paths[k]]
            entry.update(
                predicted=None,
                probability=None,
                given_probability=None,
                score=1.0,
                issue="undecodable",
                error=f"{b.reason}: {b.detail}".rstrip(": "),
            )
        else:
            n = row[k]
            p = scores.probabilities[n]
            best = int(scores.predicted[n])
            entry.update(
                predicted=classes[best],
                probability=round(float(p[best]), 6),
                given_probability=round(float(p[labels[n]]), 6),
                score=round(1.0 - float(scores.quality[n]), 6),
                issue=_issue(dups.get(k, (None, None))[1], bool(scores.issue[n])),
            )
        out.append(entry)
    return {
        "classes": classes,
        "model": model_fingerprint(model),
        "model_name": Path(model).name,
        "features": source.kind,
        "honest": source.honest,
        "folds": scores.folds,
        "seconds": {
            "decode_check": round(t1 - t0, 3),
            "features": round(feature_s, 3),
            "oof_and_cleanlab": round(scores.seconds, 3),
            "hashes": round(t3 - t2, 3),
        },
        "items": out,
    }


def _issue(duplicate: str | None, label_issue: bool) -> str | None:
    """One issue per file: an exact copy is a duplicate (delete it) even when its class
    differs; a label issue outranks a near duplicate (perceptual hashes of small images also
    pair distinct look-alikes, duplicates.py), whose ``duplicate_of`` is still given."""
    if duplicate == "exact":
        return "duplicate"
    if label_issue:
        return "label"
    return "duplicate" if duplicate else None

"""Scoring for real: planted label errors on the texture photos and on digits rank at the top
(out-of-fold, from the body's features), duplicates are paired, the corrupt file is flagged,
and the .onnx file's body features equal the checkpoint's."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.clean.duplicates import near_pairs
from fastcore_cv.clean.session import CleanSession


def _recall_at_2x(items, errors) -> float:
    """Share of the planted errors among the 2 x len(errors) highest-scored decodable files."""
    ranked = sorted((i for i in items if i["issue"] != "undecodable"), key=lambda i: -i["score"])
    top = {i["path"] for i in ranked[: 2 * len(errors)]}
    return sum(path in top for path, _ in errors) / len(errors)


def test_planted_label_errors_rank_at_the_top(scored):
    items = scored.session.items()
    assert _recall_at_2x(items, scored.errors) >= 0.8
    by_path = {i["path"]: i for i in items}
    # cleanlab flags them and the suggested class is the one each file came from
    flagged = [p for p, _ in scored.errors if by_path[p]["issue"] == "label"]
    assert len(flagged) >= 0.8 * len(scored.errors)
    right = [p for p, true in scored.errors if by_path[p]["predicted"] == true]
    assert len(right) >= 0.8 * len(scored.errors)
    assert scored.session.summary()["honest"] and scored.session.meta["folds"] == 5


def test_duplicates_are_paired_and_the_corrupt_file_is_flagged(scored):
    by_path = {i["path"]: i for i in scored.session.items()}
    original, copy = scored.exact
    assert by_path[copy]["issue"] == "duplicate" and by_path[copy]["duplicate_of"] == original
    assert scored.session.info[copy]["duplicate_kind"] == "exact"
    original, smaller = scored.resized
    assert by_path[smaller]["duplicate_of"] == original
    assert scored.session.info[smaller]["duplicate_kind"] == "near"
    dups = {p for p, i in by_path.items() if i["issue"] == "duplicate"}
    assert dups == {scored.exact[1], scored.resized[1]}  # no distinct photo is called a copy
    bad = by_path[scored.corrupt]
    assert bad["issue"] == "undecodable" and bad["predicted"] is None
    assert next(iter(by_path.values()))["issue"] is not None  # suspects come first


@pytest.mark.slow
def test_onnx_model_gives_the_checkpoint_body_features(planted, models, onnx_model):
    from fastcore_cv.clean.features import load_source
    from fastcore_cv.vision import get_image_files

    files = [p for p in get_image_files(planted.root / "valid")][:40]
    a, _ = load_source(models.checkpoint).features(files)
    b, _ = load_source(onnx_model).features(files)
    assert a.shape == b.shape == (40, 1280)
    eps = float(np.finfo(np.float32).eps)
    # float32 through ~60 layers: a few hundred eps of the features' magnitude
    assert np.abs(a - b).max() <= 1e3 * eps * max(1.0, float(np.abs(a).max()))
    session = CleanSession(planted.root, onnx_model)
    assert session.meta["features"] == "onnx body" and session.meta["honest"]
    assert _recall_at_2x(session.items(), planted.errors) >= 0.8


@pytest.mark.slow
def test_planted_errors_on_digits_rank_high(tmp_path, models):
    """Digits (32 px scans, ten classes, 40 per class) with 10 files moved to a wrong class:
    the ImageNet body's features, out of fold, still put most at the top."""
    from fastcore_cv.export.checkpoint import load_checkpoint, save_checkpoint
    from fastcore_cv.vision import write_digits_folder

    src = write_digits_folder(tmp_path / "all")
    root = tmp_path / "digits"
    for d in range(10):
        (root / str(d)).mkdir(parents=True)
        for f in sorted((src / str(d)).glob("*.png"))[:40]:
            shutil.copyfile(f, root / str(d) / f.name)
    errors = []
    for d in range(10):
        first = sorted((root / str(d)).glob("*.png"))[0]
        moved = root / str((d + 3) % 10) / f"was_{d}_{first.name}"
        first.rename(moved)
        errors.append((moved.relative_to(root).as_posix(), str(d)))
    ckpt = load_checkpoint(models.checkpoint)  # the same body, a ten-class head, 32 px
    from fastcore_cv.vision.models import BodyHead, make_head
    from fastcore_cv.vision.preprocessing import PreprocessConfig

    model = BodyHead(ckpt.model.body, make_head(1280, 10, "linear"))
    path = save_checkpoint(
        model,
        tmp_path / "digits.pt",
        arch="efficientnet_lite0",
        classes=[str(d) for d in range(10)],
        preprocess_config=PreprocessConfig(32),
    )
    items = CleanSession(root, path).items()
    assert _recall_at_2x(items, errors) >= 0.7


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**32 - 1), st.integers(0, 12))
def test_near_pairs_match_a_brute_force_reference(n, seed, max_bits):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2, (max(1, n // 3), 128)).astype(bool)
    bits = base[rng.integers(0, len(base), n)]
    flips = rng.random((n, 128)) < 0.04  # near copies of a few base hashes
    bits = bits ^ flips
    want = set()
    for i in range(n):
        for j in range(i + 1, n):
            d = (bits[i] != bits[j]).reshape(2, 64).sum(1).max()
            if d <= max_bits:
                want.add((i, j))
    assert set(near_pairs(bits, max_bits)) == want

"""``ImageDataLoaders.from_csv``: labels from a CSV (columns by index or name, a split column
or a seeded split), bad rows named by CSV line, bad image files skipped with one warning."""

from __future__ import annotations

import pytest

from fastcore_cv.vision import BadImageWarning, ImageDataLoaders, get_image_files


def _write(path, rows):
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")


def test_labels_split_and_columns_by_name(texture_base, tmp_path):
    files = get_image_files(texture_base)
    rel = [p.relative_to(texture_base).as_posix() for p in files]
    # labels from the CSV, not the folders: every brick crop is called "wall"
    rows = [["split", "file", "kind"]] + [
        [r.split("/")[0], r, "wall" if "/brick/" in r else r.split("/")[1]] for r in rel
    ]
    csv_path = tmp_path / "labels.csv"
    _write(csv_path, rows)
    dls = ImageDataLoaders.from_csv(
        texture_base,
        csv_path,
        fn_col="file",
        label_col="kind",
        valid_col="split",
        size=32,
        bs=8,
        augment=False,
    )
    assert dls.classes == ["grass", "gravel", "wall"]
    assert len(dls.valid_ds) == sum(r.startswith("valid/") for r in rel)
    assert all("/valid/" in str(p) for p in dls.valid_ds.items)
    x, y = dls.one_batch()
    assert tuple(x.shape) == (8, 3, 32, 32) and int(y.max()) <= 2


def test_split_with_valid_pct_when_no_split_column(texture_base, tmp_path):
    rel = [p.relative_to(texture_base).as_posix() for p in get_image_files(texture_base)]
    _write(tmp_path / "l.csv", [["path", "label"]] + [[r, r.split("/")[1]] for r in rel])
    dls = ImageDataLoaders.from_csv(
        texture_base, tmp_path / "l.csv", valid_pct=0.25, size=32, augment=False
    )
    assert len(dls.valid_ds) == round(0.25 * len(rel))
    assert dls.counts["valid"] == {c: round(0.25 * len(rel) / 3) for c in dls.classes}


def test_bad_rows_are_named_by_line(texture_base, tmp_path):
    ok = "train/brick/000.png"
    cases = [
        ([["path", "label"], [ok, "brick"], ["train/brick/missing.png", "brick"]], ":3: image"),
        ([["path", "label"], [ok, ""]], ":2: empty label"),
        ([["path", "label", "is_valid"], [ok, "brick", "maybe"]], "must be true/false"),
        ([["path"], [ok]], "label_col"),
    ]
    for rows, says in cases:
        _write(tmp_path / "bad.csv", rows)
        with pytest.raises(ValueError, match=says):
            ImageDataLoaders.from_csv(texture_base, tmp_path / "bad.csv", size=32)
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        ImageDataLoaders.from_csv(texture_base, "nothere.csv")


def test_a_corrupt_file_is_skipped_with_one_warning(texture_base, tmp_path):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(texture_base / "train", root)
    (root / "brick" / "bad.png").write_bytes(b"not a png")
    rel = [p.relative_to(root).as_posix() for p in get_image_files(root)]
    _write(root / "labels.csv", [["path", "label"]] + [[r, r.split("/")[0]] for r in rel])
    with pytest.warns(BadImageWarning, match="bad.png"):
        dls = ImageDataLoaders.from_csv(root, size=32, augment=False)
    assert len(dls.train_ds) + len(dls.valid_ds) == len(rel) - 1

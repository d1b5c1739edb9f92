"""ImageDataLoaders.from_folder: layouts, splits, batches, oversampling, bad files, errors."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pytest
import torch

from fastcore_cv.vision import ImageDataLoaders, ImageError, split_items
from fastcore_cv.vision.verify import BadImageWarning

SMALL = dict(size=16, bs=4)


def labels_of(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_class_folders_are_split_stratified_with_the_seed(make_folder):
    root = make_folder({"cat": 10, "dog": 10, "rare": 2})
    dls = ImageDataLoaders.from_folder(root, **SMALL)
    assert dls.classes == ["cat", "dog", "rare"] and dls.c == 3
    assert dls.counts == {
        "train": {"cat": 8, "dog": 8, "rare": 1},
        "valid": {"cat": 2, "dog": 2, "rare": 1},
    }
    assert len(dls.train_ds) == 17 and len(dls.valid_ds) == 5
    assert not set(dls.train_ds.items) & set(dls.valid_ds.items)
    path, label = dls.valid_ds[0]
    assert path.parent.name == dls.classes[label]
    again = ImageDataLoaders.from_folder(root, **SMALL)
    assert again.valid_ds.items == dls.valid_ds.items
    other = ImageDataLoaders.from_folder(root, seed=7, **SMALL)
    assert other.valid_ds.items != dls.valid_ds.items


def test_unstratified_split_is_fastais_seeded_shuffle():
    labels = np.repeat(np.arange(3), [50, 30, 2])
    t, v = split_items(labels, 0.2, seed=0, stratify=False)
    assert len(v) == int(0.2 * 82) and len(t) + len(v) == 82
    perm = np.random.default_rng(0).permutation(82)
    np.testing.assert_array_equal(v, np.sort(perm[:16]))


@pytest.mark.parametrize("seed", range(20))
def test_stratified_split_never_loses_a_class(seed):
    labels = np.repeat(np.arange(4), [40, 7, 2, 3])
    t, v = split_items(labels, 0.2, seed)
    assert set(labels[v]) == set(labels[t]) == {0, 1, 2, 3}
    assert np.bincount(labels[v]).tolist() == [8, 1, 1, 1]


def test_train_valid_layout_is_used_as_given(make_folder, tmp_path):
    make_folder({"a": 3, "b": 4}, root="ds/train")
    make_folder({"a": 2, "b": 1}, root="ds/valid", seed=1)
    dls = ImageDataLoaders.from_folder(tmp_path / "ds", **SMALL)
    assert dls.counts == {"train": {"a": 3, "b": 4}, "valid": {"a": 2, "b": 1}}
    assert all(p.parts[-3] == "valid" for p in dls.valid_ds.items)


def test_valid_class_unknown_to_train_is_warned_and_ignored(make_folder, tmp_path):
    make_folder({"a": 3, "b": 4}, root="ds/train")
    make_folder({"a": 2, "zebra": 1}, root="ds/valid")
    with (
        pytest.warns(UserWarning, match="zebra"),
        pytest.warns(UserWarning, match=r"no validation images .*'b'"),
    ):
        dls = ImageDataLoaders.from_folder(tmp_path / "ds", **SMALL)
    assert dls.classes == ["a", "b"] and dls.counts["valid"] == {"a": 2, "b": 0}


def test_batches_are_float32_nchw_and_int64_labels(make_folder):
    dls = ImageDataLoaders.from_folder(make_folder({"a": 6, "b": 6}), size=(12, 20), bs=5)
    x, y = next(iter(dls.train))
    assert x.dtype == torch.float32 and x.shape == (5, 3, 12, 20) and x.is_contiguous()
    assert y.dtype == torch.int64 and y.shape == (5,)
    assert len(dls.train) == 2  # 10 train images, bs 5, drop_last
    assert [len(y) for _, y in dls.valid] == [2]


def test_validation_batches_equal_preprocess_of_each_file(make_folder):
    from fastcore_cv.vision.preprocessing import preprocess

    dls = ImageDataLoaders.from_folder(make_folder({"a": 5, "b": 5}), **SMALL)
    x = torch.cat([x for x, _ in dls.valid]).numpy()
    for i, path in enumerate(dls.valid_ds.items):
        np.testing.assert_array_equal(x[i], preprocess(path, dls.preprocess_config))
    assert labels_of(dls.valid) == dls.valid_ds.labels.tolist()


def test_same_seed_same_batches_each_epoch_new_order(make_folder):
    root = make_folder({"a": 8, "b": 8})
    one = ImageDataLoaders.from_folder(root, **SMALL)
    two = ImageDataLoaders.from_folder(root, **SMALL)
    e0 = [(x.clone(), y.clone()) for x, y in one.train]
    e1 = [(x.clone(), y.clone()) for x, y in one.train]
    for (xa, ya), (xb, yb) in zip(e0, list(two.train), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(e0, e1, strict=True))


def test_threads_give_the_same_batches_as_no_threads(make_folder):
    root = make_folder({"a": 9, "b": 9})
    serial = ImageDataLoaders.from_folder(root, num_workers=0, **SMALL)
    threaded = ImageDataLoaders.from_folder(root, num_workers=2, **SMALL)
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(serial.train, threaded.train, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_without_augment_training_batches_are_validation_transforms(make_folder):
    dls = ImageDataLoaders.from_folder(
        make_folder({"a": 4, "b": 4}), augment=False, valid_pct=0, **SMALL
    )
    assert dls.valid is None and len(dls.valid_ds) == 0
    x = torch.cat([x for x, _ in dls.test_dl(dls.train_ds)])
    by_path = dict(zip(dls.train_ds.items, x, strict=True))
    order = dls.train.order(0)
    xs = torch.cat([x for x, _ in dls.train])
    for k, i in enumerate(order[: len(xs)]):
        assert torch.equal(xs[k], by_path[dls.train_ds.items[i]])


def test_flip_false_and_augment_options_reach_the_transform(make_folder):
    dls = ImageDataLoaders.from_folder(
        make_folder({"a": 3, "b": 3}), flip=False, augment={"scale": (0.5, 1)}, **SMALL
    )
    assert dls.train_transform.flip is False and dls.train_transform.scale == (0.5, 1)


def test_oversampling_balances_classes_and_reports_counts(make_folder, caplog):
    root = make_folder({"big": 40, "small": 4})
    with caplog.at_level(logging.INFO, logger="fastcore_cv.vision"):
        dls = ImageDataLoaders.from_folder(root, oversample=True, size=8, bs=8, augment=False)
    assert dls.oversample_counts == {
        "before": {"big": 32, "small": 3},
        "after": {"big": 18, "small": 18},
    }
    assert "oversampling" in caplog.text and "'small': 3" in caplog.text
    seen = np.array(sum((labels_of(dls.train) for _ in range(10)), []))
    share = (seen == 1).mean()
    assert 0.4 < share < 0.6  # 3 of 35 images, yet about half of what training sees
    assert len(labels_of(dls.valid)) == 9  # validation is never oversampled
    assert "oversampled" in repr(dls)


def test_bad_files_are_skipped_with_one_warning_naming_them(make_folder, bad_files):
    root = make_folder({"a": 4, "b": 4})
    for name, data in bad_files.items():
        (root / "a" / name).write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dls = ImageDataLoaders.from_folder(root, **SMALL)
        _ = [b for b in dls.train] + [b for b in dls.valid]
    bad = [w for w in caught if issubclass(w.category, BadImageWarning)]
    assert len(bad) == 1
    for name in bad_files:
        assert name in str(bad[0].message)
    assert "truncated" in str(bad[0].message) and "zero bytes" in str(bad[0].message)
    assert {b.path.name for b in dls.skipped} == set(bad_files)
    assert len(dls.train_ds) + len(dls.valid_ds) == 8
    assert "skipped 4 bad file(s)" in repr(dls)


def test_a_72_megapixel_photo_is_kept_because_it_decodes_drafted(make_folder, big_jpeg):
    """from_folder decodes JPEGs in draft mode: a 72 MP photo costs ~1 MP, not a bomb."""
    import shutil

    root = make_folder({"a": 4, "b": 4})
    shutil.copy(big_jpeg, root / "a" / "big.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadImageWarning)
        dls = ImageDataLoaders.from_folder(root, **SMALL)
    assert not dls.skipped and len(dls.train_ds) + len(dls.valid_ds) == 9
    _ = [b for b in dls.train] + [b for b in dls.valid]  # it decodes in training too
    x, _ = next(iter(dls.test_dl([root / "a" / "big.jpg"])))
    assert x.shape == (1, 3, 16, 16)


def test_strict_raises_naming_the_bad_file(make_folder, bad_files):
    root = make_folder({"a": 4, "b": 4})
    (root / "b" / "zero.jpg").write_bytes(bad_files["zero.jpg"])
    with pytest.raises(ImageError, match=r"zero\.jpg: zero bytes"):
        ImageDataLoaders.from_folder(root, strict=True, **SMALL)


def test_a_file_that_breaks_after_loading_is_skipped_during_iteration(make_folder, bad_files):
    dls = ImageDataLoaders.from_folder(make_folder({"a": 4, "b": 4}), valid_pct=0, bs=8, size=8)
    victim = dls.train_ds.items[0]
    victim.write_bytes(bad_files["truncated.jpg"])
    with pytest.warns(BadImageWarning, match=victim.name):
        batches = list(dls.train)
    assert sum(len(y) for _, y in batches) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second epoch does not warn again
        assert sum(len(y) for _, y in dls.train) == 7


def test_a_class_whose_every_file_is_bad_is_dropped(make_folder, bad_files):
    root = make_folder({"a": 4, "b": 4, "c": 0})
    (root / "c" / "zero.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="'c'"), pytest.warns(BadImageWarning, match="zero.jpg"):
        dls = ImageDataLoaders.from_folder(root, **SMALL)
    assert dls.classes == ["a", "b"]


def test_loose_images_beside_class_folders_are_warned_about(make_folder):
    root = make_folder({"a": 3, "b": 3})
    (root / "stray.jpg").write_bytes((root / "a" / "001.jpg").read_bytes())
    with pytest.warns(UserWarning, match="stray.jpg"):
        ImageDataLoaders.from_folder(root, **SMALL)


def test_hidden_files_and_folders_are_not_classes_or_items(make_folder):
    root = make_folder({"a": 3, "b": 3})
    (root / ".cache").mkdir()
    (root / ".cache" / "x.jpg").write_bytes((root / "a" / "001.jpg").read_bytes())
    (root / "a" / ".thumb.jpg").write_bytes(b"junk")
    dls = ImageDataLoaders.from_folder(root, **SMALL)
    assert dls.classes == ["a", "b"] and len(dls.train_ds) + len(dls.valid_ds) == 6


def test_test_dl_over_paths(make_folder):
    root = make_folder({"a": 3, "b": 3})
    dls = ImageDataLoaders.from_folder(root, **SMALL)
    x, y = next(iter(dls.test_dl(sorted(root.glob("a/*")), bs=10)))
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [-1, -1, -1]


# ------------------------------------------------------------------ errors naming the path


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageDataLoaders.from_folder(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: no class folders.*expected"):
        ImageDataLoaders.from_folder(tmp_path)


def test_only_one_class(make_folder):
    root = make_folder({"cat": 3})
    with pytest.raises(ValueError, match=f"{root}: only one class .'cat'."):
        ImageDataLoaders.from_folder(root)


def test_images_without_class_folders(make_folder, tmp_path):
    root = make_folder({"a": 2})
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (root / "a").iterdir():
        (flat / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match="lie directly in this folder.*<class>/<image>"):
        ImageDataLoaders.from_folder(flat)


def test_empty_class_folder_is_dropped_with_a_warning(make_folder):
    root = make_folder({"a": 3, "b": 3, "empty": 0})
    with pytest.warns(UserWarning, match="empty"):
        dls = ImageDataLoaders.from_folder(root, **SMALL)
    assert dls.classes == ["a", "b"]


def test_empty_class_folder_leaving_one_class_is_an_error(make_folder):
    root = make_folder({"a": 3, "empty": 0})
    with (
        pytest.warns(UserWarning, match="empty"),
        pytest.raises(ValueError, match="only one class"),
    ):
        ImageDataLoaders.from_folder(root)


def test_nested_folders_say_which_layout_was_expected(make_folder, tmp_path):
    make_folder({"a": 2, "b": 2}, root="outer/dataset/train")
    with pytest.raises(
        ValueError,
        match=r"nested folders deeper than expected.*<class>/<image>.*did you mean path=.*dataset",
    ):
        ImageDataLoaders.from_folder(tmp_path / "outer")


def test_valid_without_train(make_folder, tmp_path):
    make_folder({"a": 2, "b": 2}, root="ds/valid")
    with pytest.raises(ValueError, match="valid/ but no train/"):
        ImageDataLoaders.from_folder(tmp_path / "ds")


def test_train_alone_is_split(make_folder, tmp_path):
    make_folder({"a": 5, "b": 5}, root="ds/train")
    dls = ImageDataLoaders.from_folder(tmp_path / "ds", **SMALL)
    assert dls.counts["valid"] == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"valid_pct": 1.0}, "valid_pct"),
        ({"bs": 0}, "bs"),
        ({"num_workers": -1}, "num_workers"),
        ({"size": 0}, "size"),
    ],
)
def test_bad_arguments_name_themselves(make_folder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageDataLoaders.from_folder(make_folder({"a": 2, "b": 2}), **kwargs)


def test_symlink_loop_inside_a_class_folder_is_harmless(make_folder):
    root = make_folder({"a": 3, "b": 3})
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    dls = ImageDataLoaders.from_folder(root, **SMALL)
    assert len(dls.train_ds) + len(dls.valid_ds) == 6


def test_test_dl_with_augment_gives_new_seeded_views_in_order(make_folder):
    root = make_folder({"a": 3, "b": 3})
    dls = ImageDataLoaders.from_folder(root, valid_pct=0, **SMALL)
    dl = dls.test_dl(dls.train_ds, augment=True)
    first, second = torch.cat([x for x, _ in dl]), torch.cat([x for x, _ in dl])
    assert not torch.equal(first, second)  # two different augmented views
    assert labels_of(dl) == dls.train_ds.labels.tolist()  # dataset order, not shuffled
    again = dls.test_dl(dls.train_ds, augment=True)
    assert torch.equal(torch.cat([x for x, _ in again]), first)  # seeded


def test_an_unreadable_class_folder_is_skipped_with_a_warning_naming_it(make_folder, unprivileged):
    root = make_folder({"a": 4, "b": 4, "locked": 4})
    (root / "locked").chmod(0)
    try:
        with unprivileged(), pytest.warns(UserWarning, match="unreadable class folder") as seen:
            dls = ImageDataLoaders.from_folder(root, **SMALL)
            x, y = next(iter(dls.train))
    finally:
        (root / "locked").chmod(0o755)
    assert any(str(root / "locked") in str(w.message) for w in seen)
    assert dls.classes == ["a", "b"] and x.shape[1:] == (3, 16, 16)


def test_an_unreadable_dataset_folder_is_an_error_naming_it(make_folder, unprivileged):
    root = make_folder({"a": 2, "b": 2})
    root.chmod(0)
    try:
        with unprivileged(), pytest.raises(PermissionError, match=f"cannot list {root}"):
            ImageDataLoaders.from_folder(root, **SMALL)
    finally:
        root.chmod(0o755)


def test_a_fifo_in_a_class_folder_is_skipped_as_not_a_regular_file(make_folder, imaging):
    root = make_folder({"a": 3, "b": 3})
    os.mkfifo(root / "a" / "pipe.jpg")
    with pytest.warns(BadImageWarning, match=r"pipe\.jpg \(not a regular file\)"):
        dls = imaging.call_within(
            lambda: ImageDataLoaders.from_folder(root, **SMALL), fifos=[root / "a" / "pipe.jpg"]
        )
    assert [b.detail for b in dls.skipped] == ["FIFO"]

"""The embedded example data written as ordinary image folders."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from fastcore_cv.vision import ImageDataLoaders
from fastcore_cv.vision.datasets import write_digits_folder, write_texture_folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("d") / "digits", size=16)


def test_digits_are_class_folders_of_pngs(digits):
    from sklearn.datasets import load_digits

    assert sorted(p.name for p in digits.iterdir()) == [str(i) for i in range(10)]
    files = sorted(digits.glob("*/*.png"))
    assert len(files) == 1797
    ref = load_digits()
    first = np.asarray(Image.open(digits / str(ref.target[0]) / "0000.png"))
    assert first.shape == (16, 16)
    small = np.asarray(Image.fromarray(first).resize((8, 8), Image.Resampling.BOX), float)
    assert np.corrcoef(small.ravel(), ref.images[0].ravel())[0, 1] > 0.9


def test_writing_again_is_a_no_op_and_a_lost_file_is_restored(digits):
    victim = digits / "3" / "0003.png"
    mtimes = {p: p.stat().st_mtime_ns for p in digits.glob("*/*.png")}
    write_digits_folder(digits, size=16)
    assert {p: p.stat().st_mtime_ns for p in digits.glob("*/*.png")} == mtimes
    victim.unlink()
    write_digits_folder(digits, size=16)
    assert victim.is_file() and not list(digits.rglob(".tmp-*"))


def test_digits_load_as_ten_classes(digits):
    dls = ImageDataLoaders.from_folder(digits, size=16, bs=256, flip=False, verify=False)
    assert dls.classes == [str(i) for i in range(10)]
    assert min(dls.counts["valid"].values()) >= 35


def test_textures_are_train_and_valid_folders_from_separate_halves(tmp_path):
    root = write_texture_folder(tmp_path / "tex")
    for split in ("train", "valid"):
        for name in ("brick", "grass", "gravel"):
            files = sorted((root / split / name).glob("*.png"))
            assert len(files) == 36
            assert Image.open(files[0]).size == (96, 96)
    dls = ImageDataLoaders.from_folder(root, size=32, bs=16)
    assert dls.counts["valid"] == {"brick": 36, "grass": 36, "gravel": 36}


@pytest.mark.parametrize("size", [4, 2.0, True])
def test_bad_sizes(tmp_path, size):
    with pytest.raises(ValueError, match="size"):
        write_digits_folder(tmp_path, size=size)


@pytest.mark.parametrize(
    "module, writer",
    [("sklearn.datasets", write_digits_folder), ("skimage.data", write_texture_folder)],
)
def test_missing_optional_package_says_what_to_install(module, writer, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like
    with pytest.raises(RuntimeError, match=r"pip install 'fastcore-cv\[data\]'"):
        writer(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_demo_without_scikit_learn_is_one_clear_line(monkeypatch, tmp_path, capsys):
    from fastcore_cv.cli import main

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("fastcore-cv demo: error:") and "scikit-learn" in err[0]
    )

"""verify_images: every bad file with its reason, full decode, optional delete."""

from __future__ import annotations

import inspect
import os
import shutil

import pytest

from fastcore_cv.vision import decode
from fastcore_cv.vision.verify import BadImage, verify_images

EXPECTED = {
    "truncated.jpg": "truncated",
    "zero.jpg": "zero bytes",
    "text.jpg": "not an image",
    "bomb.png": "decompression bomb",
    "large_header.png": "decompression bomb",
}


@pytest.fixture
def folder(images, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for p in images.values():
        shutil.copy(p, d / p.name)
    return d


def test_every_bad_file_is_found_with_its_reason(folder):
    bad = verify_images(folder)
    assert {b.path.name: b.reason for b in bad} == EXPECTED
    assert all(isinstance(b, BadImage) and b.path.parent == folder and not b.deleted for b in bad)
    assert str(bad[0]).endswith(f"({bad[0].reason})")


def test_a_list_of_files_works_and_threads_agree(folder):
    files = sorted(folder.iterdir())
    assert verify_images(files) == verify_images(files, num_workers=2) == verify_images(folder)


def test_truncation_is_found_where_pil_verify_misses_it(images):
    from PIL import Image

    with Image.open(images["truncated.jpg"]) as img:
        img.verify()  # Pillow's verify() passes this file...
    assert verify_images([images["truncated.jpg"]])[0].reason == "truncated"  # ...we do not


def test_delete_removes_only_the_bad_files(folder):
    before = {p.name for p in folder.iterdir()}
    bad = verify_images(folder, delete=True)
    assert all(b.deleted for b in bad)
    assert {p.name for p in folder.iterdir()} == before - set(EXPECTED)
    assert verify_images(folder) == []


def test_unreadable_files_are_reported(folder, unprivileged):
    (folder / "good.jpg").chmod(0)
    with unprivileged():
        bad = {b.path.name: b for b in verify_images(folder)}
    assert bad["good.jpg"].reason == "unreadable" and "Permission denied" in bad["good.jpg"].detail


def test_fifos_and_devices_are_reported_as_what_they_are(folder, imaging):
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    found = imaging.call_within(lambda: verify_images(folder), fifos=[folder / "pipe.jpg"])
    bad = {b.path.name: (b.reason, b.detail) for b in found}
    assert bad["pipe.jpg"] == ("not a regular file", "FIFO")
    assert bad["zero.png"] == ("not a regular file", "character device")
    assert {k: v[0] for k, v in bad.items() if k not in ("pipe.jpg", "zero.png")} == EXPECTED


def test_every_max_pixels_default_is_the_one_limit():
    from fastcore_cv.export.predictor import Predictor
    from fastcore_cv.vision import augment, data, download, preprocessing, verify

    functions = [
        decode.load_image, preprocessing.preprocess, preprocessing.preprocess_batch,
        verify.check_image, verify.find_bad_images, verify.verify_images,
        data.ImageDataLoaders.from_folder, download.download_images, Predictor.__init__,
    ]  # fmt: skip
    for f in functions:
        assert inspect.signature(f).parameters["max_pixels"].default == decode.MAX_PIXELS, f
    assert augment.TrainTransform.__dataclass_fields__["max_pixels"].default == decode.MAX_PIXELS
    assert decode.MAX_PIXELS == 50_000_000


def test_pixel_limit_is_configurable(folder):
    bad = verify_images(folder, max_pixels=100)
    assert {b.path.name for b in bad if b.reason == "decompression bomb"} >= {
        "good.jpg",
        "plain.png",
    }

"""verify_images: every bad file with its reason, full decode, optional delete."""

from __future__ import annotations

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


def test_unreadable_files_are_reported(folder, monkeypatch):
    real_open = open

    def guarded(path, *args, **kwargs):
        if str(path).endswith("good.jpg"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(decode, "open", guarded, raising=False)
    bad = {b.path.name: b for b in verify_images(folder)}
    assert bad["good.jpg"].reason == "unreadable" and "Permission denied" in bad["good.jpg"].detail


def test_pixel_limit_is_configurable(folder):
    bad = verify_images(folder, max_pixels=100)
    assert {b.path.name for b in bad if b.reason == "decompression bomb"} >= {
        "good.jpg",
        "plain.png",
    }

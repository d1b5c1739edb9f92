"""load_image: any source and mode -> RGB with EXIF applied; bad files -> ImageError + reason."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from fastcore_cv.vision import decode
from fastcore_cv.vision.decode import ImageError, load_image


def rgb(img):
    assert img.mode == "RGB"
    return np.asarray(img)


def test_png_round_trips_exactly(images, imaging):
    np.testing.assert_array_equal(rgb(load_image(images["plain.png"])), imaging.asymmetric_rgb())


def test_exif_orientation_6_rotates_90_clockwise(images):
    a = rgb(load_image(images["exif_rotated.jpg"])).astype(int)
    assert a.shape == (40, 20, 3)  # stored 40 wide x 20 high
    # Rotating 90 CW puts the stored top row (green) on the right and the stored left
    # half (red) on top. JPEG blurs edges, so compare away from them.
    assert a[5, 2:15, 0].min() > 200 and a[5, 2:15, 2].max() < 60  # red on top
    assert a[35, 2:15, 2].min() > 200 and a[35, 2:15, 0].max() < 60  # blue at the bottom
    assert a[5:35, 19, 1].min() > 150  # green column on the right


@pytest.mark.parametrize(
    "name",
    ["rgba.png", "palette.gif", "cmyk.jpg", "grey16.png", "grey.png", "grey.jpg", "UPPER.JPG"],
)
def test_every_mode_becomes_8bit_rgb(images, name):
    a = rgb(load_image(images[name]))
    assert a.dtype == np.uint8 and a.ndim == 3


def test_rgba_is_composited_on_white(images):
    a = rgb(load_image(images["rgba.png"]))
    np.testing.assert_array_equal(a[:, :8], np.broadcast_to([10, 20, 30], (16, 8, 3)))
    np.testing.assert_array_equal(a[:, 8:], np.full((16, 8, 3), 255))


def test_palette_gif_keeps_its_colours(images):
    a = rgb(load_image(images["palette.gif"])).astype(int)
    np.testing.assert_allclose(a[10:, :20], np.broadcast_to([255, 0, 0], (10, 20, 3)), atol=8)
    np.testing.assert_allclose(a[10:, 20:], np.broadcast_to([0, 0, 255], (10, 20, 3)), atol=8)


def test_cmyk_red_is_red(images):
    a = rgb(load_image(images["cmyk.jpg"])).astype(int)
    assert a[..., 0].min() > 200 and a[..., 1:].max() < 60


def test_16bit_grey_is_scaled_to_8_bits(images):
    a = rgb(load_image(images["grey16.png"]))
    assert (a[:, :5] == 100).all() and (a[:, 5:] == 255).all()


def test_grey_is_replicated_to_three_channels(images):
    a = rgb(load_image(images["grey.png"]))
    assert a.shape == (10, 14, 3) and (a == 77).all()


def test_path_bytes_stream_pil_and_pathlike_agree(images):
    p = images["good.jpg"]
    ref = rgb(load_image(p))
    for source in (
        str(p),
        p.read_bytes(),
        bytearray(p.read_bytes()),
        io.BytesIO(p.read_bytes()),
        Image.open(p),
    ):
        np.testing.assert_array_equal(rgb(load_image(source)), ref)


def test_arrays_of_each_layout_and_dtype(imaging):
    a = imaging.asymmetric_rgb()
    np.testing.assert_array_equal(rgb(load_image(a)), a)
    np.testing.assert_array_equal(rgb(load_image(a / 255.0)), a)
    np.testing.assert_array_equal(rgb(load_image(a.astype(np.uint16) * 257)), a)
    grey = a[..., 0]
    np.testing.assert_array_equal(rgb(load_image(grey)), np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(
        rgb(load_image(grey[..., None])), np.repeat(grey[..., None], 3, axis=2)
    )
    rgba = np.dstack([a, np.zeros(a.shape[:2], np.uint8)])  # fully transparent -> white
    assert (rgb(load_image(rgba)) == 255).all()


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((4, 4, 2), np.uint8), "HxWx3"),
        (np.zeros((2, 4, 4, 3), np.uint8), "HxWx3"),
        (np.full((4, 4), 2.0), r"\[0, 1\]"),
        (np.full((4, 4), np.nan), r"\[0, 1\]"),
        (np.full((4, 4), 300, np.int32), "0..255"),
    ],
)
def test_bad_arrays_raise_image_error(array, match):
    with pytest.raises(ImageError, match=match):
        load_image(array)


def test_unsupported_source_type_is_a_type_error():
    with pytest.raises(TypeError, match="image"):
        load_image(12345)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated.jpg", "truncated"),
        ("zero.jpg", "zero bytes"),
        ("text.jpg", "not an image"),
        ("bomb.png", "decompression bomb"),
        ("large_header.png", "decompression bomb"),
    ],
)
def test_bad_files_raise_image_error_naming_the_path_and_reason(images, name, reason):
    with pytest.raises(ImageError, match=name) as info:
        load_image(images[name])
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)  # callers may catch ValueError
    assert str(images[name]) in str(info.value)


def test_bad_bytes_name_their_size(images):
    with pytest.raises(ImageError, match=r"<\d+ bytes>: truncated"):
        load_image(images["truncated.jpg"].read_bytes())
    with pytest.raises(ImageError, match="zero bytes"):
        load_image(b"")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="missing") as info:
        load_image(tmp_path / "gone.jpg")
    assert "gone.jpg" in str(info.value)
    with pytest.raises(ImageError, match="a directory"):
        load_image(tmp_path)


def test_max_pixels_is_the_callers_limit(images):
    load_image(images["good.jpg"])  # 160 x 120 = 19,200 pixels
    with pytest.raises(ImageError, match="19,200 pixels > max_pixels=19,199"):
        load_image(images["good.jpg"], max_pixels=19_199)
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(np.zeros((200, 100, 3), np.uint8), max_pixels=100)


def test_unreadable_file_is_reported(images, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode, "open", denied, raising=False)
    with pytest.raises(ImageError, match="unreadable") as info:
        load_image(images["good.jpg"])
    assert info.value.reason == "unreadable"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_permissions(tmp_path, images):
    p = tmp_path / "locked.jpg"
    p.write_bytes(images["good.jpg"].read_bytes())
    p.chmod(0)
    with pytest.raises(ImageError, match="unreadable"):
        load_image(p)


def test_image_error_pickles():
    e = pickle.loads(pickle.dumps(ImageError("a.jpg", "truncated", "detail")))
    assert (e.source, e.reason, e.detail, str(e)) == (
        "a.jpg",
        "truncated",
        "detail",
        "a.jpg: truncated (detail)",
    )


def test_draft_decodes_a_big_jpeg_smaller_but_never_below_min_side(imaging):
    big = Image.fromarray(
        np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    )
    data = imaging.jpeg_bytes(big)
    assert load_image(data).size == (1600, 1200)
    for min_side, want in [
        (100, (200, 150)),
        (150, (200, 150)),
        (151, (400, 300)),
        (600, (800, 600)),
        (601, (1600, 1200)),
    ]:
        assert load_image(data, min_side=min_side).size == want


def test_draft_still_finds_truncation(images):
    with pytest.raises(ImageError, match="truncated"):
        load_image(images["truncated.jpg"], min_side=8)


def test_a_lazily_opened_truncated_pil_image_raises(images):
    with pytest.raises(ImageError, match="truncated"):
        load_image(Image.open(images["truncated.jpg"]))

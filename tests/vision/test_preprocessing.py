"""preprocessing.preprocess: the one validation transform (resize + centre crop, normalise),
torch-free."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fastcore_cv.vision.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    PreprocessConfig,
    normalize,
    preprocess,
    preprocess_batch,
    resize_crop,
)


def reference_normalize(pixels, mean, std):
    """float64 reference: (p / 255 - mean) / std, HWC -> CHW."""
    p = np.asarray(pixels, np.float64) / 255.0
    return ((p - np.asarray(mean)) / np.asarray(std)).transpose(2, 0, 1)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 37),
    w=st.integers(1, 37),
    seed=st.integers(0, 2**31),
    as_float=st.booleans(),
)
def test_normalize_matches_float64_reference(h, w, seed, as_float):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 256, (h, w, 3)).astype(np.float32 if as_float else np.uint8)
    mean, std = tuple(rng.uniform(0, 1, 3)), tuple(rng.uniform(0.05, 1, 3))
    got = normalize(p, mean, std)
    assert got.dtype == np.float32 and got.shape == (3, h, w) and got.flags.c_contiguous
    # float32 rounding of scale/shift and of the result: |x| <= 1/0.05 = 20, eps 1.2e-7.
    np.testing.assert_allclose(got, reference_normalize(p, mean, std), rtol=0, atol=2e-5)


def test_normalize_writes_into_out_and_checks_it():
    p = np.zeros((4, 5, 3), np.uint8)
    out = np.empty((3, 4, 5), np.float32)
    assert normalize(p, IMAGENET_MEAN, IMAGENET_STD, out=out) is out
    with pytest.raises(ValueError, match="out"):
        normalize(p, IMAGENET_MEAN, IMAGENET_STD, out=np.empty((3, 5, 4), np.float32))
    with pytest.raises(ValueError, match="pixels"):
        normalize(np.zeros((4, 5)), IMAGENET_MEAN, IMAGENET_STD)


def test_same_size_image_passes_through_unchanged():
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for policy in ("crop", "squish"):
        cfg = PreprocessConfig(32, resize_policy=policy)
        np.testing.assert_allclose(
            preprocess(a, cfg), reference_normalize(a, cfg.mean, cfg.std), atol=2e-5
        )


def test_crop_takes_the_centre_of_a_wide_image():
    a = np.zeros((20, 60, 3), np.uint8)
    a[:, 20:40] = 255  # a white centre square between black sides
    out = np.asarray(resize_crop(Image.fromarray(a), PreprocessConfig(20)))
    assert (out == 255).all()
    squished = np.asarray(
        resize_crop(Image.fromarray(a), PreprocessConfig(20, resize_policy="squish"))
    )
    assert squished[:, :5].max() < 30 and squished[:, -5:].max() < 30  # sides kept, squeezed


def test_crop_pct_keeps_the_central_fraction():
    a = np.zeros((100, 100, 3), np.uint8)
    a[10:90, 10:90] = 255  # white inner 80%
    out = np.asarray(resize_crop(Image.fromarray(a), PreprocessConfig(40, crop_pct=0.8)))
    # The antialiasing filter reaches one output pixel past the box: check inside that rim.
    assert out.shape == (40, 40, 3) and (out[1:-1, 1:-1] == 255).all()
    whole = np.asarray(resize_crop(Image.fromarray(a), PreprocessConfig(40)))
    assert (whole[:3] == 0).all() and (whole[8:-8, 8:-8] == 255).all()


def test_non_square_size_is_height_width():
    x = preprocess(np.zeros((50, 80, 3), np.uint8), PreprocessConfig((24, 32)))
    assert x.shape == (3, 24, 32)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), size=st.integers(1, 41), squish=st.booleans())
def test_any_image_size_gives_the_configured_shape(h, w, size, squish):
    cfg = PreprocessConfig(size, resize_policy="squish" if squish else "crop")
    x = preprocess(np.full((h, w, 3), 200, np.uint8), cfg)
    assert x.shape == (3, size, size)
    np.testing.assert_allclose(
        x, reference_normalize(np.full((size, size, 3), 200), cfg.mean, cfg.std), atol=2e-5
    )


def test_batch_equals_stacked_singles(images):
    cfg = PreprocessConfig(16)
    paths = [images[n] for n in ("good.jpg", "rgba.png", "cmyk.jpg", "exif_rotated.jpg")]
    batch = preprocess_batch(paths, cfg)
    assert batch.shape == (4, 3, 16, 16) and batch.dtype == np.float32
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(batch[i], preprocess(p, cfg))


def test_batch_raises_on_the_bad_image_naming_it(images):
    with pytest.raises(ImageError, match="zero.jpg"):
        preprocess_batch([images["good.jpg"], images["zero.jpg"]], PreprocessConfig(16))


def test_draft_is_close_to_a_full_decode_and_can_be_turned_off(imaging):
    rng = np.random.default_rng(2)
    smooth = np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((40, 40, 1))).astype(np.uint8)
    data = imaging.jpeg_bytes(Image.fromarray(smooth), quality=95)  # 1600 x 1200
    fast = preprocess(data, PreprocessConfig(64))
    exact = preprocess(data, PreprocessConfig(64, draft=False))
    # Measured: mean |diff| ~0.03 in normalised units (~2 grey levels of 255) on blocky images.
    assert np.abs(fast - exact).mean() < 0.1


def test_config_round_trips_through_json():
    cfg = PreprocessConfig(
        (20, 30), "squish", 0.875, (0.5, 0.5, 0.5), (0.25, 0.5, 1), "bicubic", False
    )
    text = cfg.to_json()
    assert json.loads(text)["version"] == 1
    assert PreprocessConfig.from_json(text) == cfg
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig(7).size == (7, 7)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        PreprocessConfig().size = (1, 1)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"size": 0}, ValueError, "size"),
        ({"size": (3, 4, 5)}, ValueError, "size"),
        ({"size": 2.5}, TypeError, "size"),
        ({"resize_policy": "pad"}, ValueError, "resize_policy"),
        ({"crop_pct": 0}, ValueError, "crop_pct"),
        ({"crop_pct": 1.5}, ValueError, "crop_pct"),
        ({"mean": (0.5, 0.5)}, ValueError, "mean"),
        ({"mean": "abc"}, TypeError, "mean"),
        ({"std": (0.5, 0, 0.5)}, ValueError, "std"),
        ({"std": (0.5, float("nan"), 0.5)}, ValueError, "std"),
        ({"resample": "cubic"}, ValueError, "resample"),
        ({"draft": 1}, TypeError, "draft"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PreprocessConfig(**kwargs)


def test_from_dict_refuses_unknown_keys_and_versions():
    d = PreprocessConfig().to_dict()
    with pytest.raises(ValueError, match="unknown"):
        PreprocessConfig.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="version"):
        PreprocessConfig.from_dict({**d, "version": 2})


def test_importing_preprocess_does_not_import_torch():
    code = (
        "import sys; import fastcore_cv.vision.preprocessing as p; "
        "import fastcore_cv.vision as v; v.PreprocessConfig; v.ImageError; v.load_image; "
        "import numpy as np; p.preprocess(np.zeros((8, 8, 3), np.uint8), p.PreprocessConfig(4)); "
        "v.preprocess(np.zeros((8, 8, 3), np.uint8), v.PreprocessConfig(4)); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_module_and_the_function_have_different_names():
    import fastcore_cv.vision as vision
    import fastcore_cv.vision.preprocessing as module

    assert vision.preprocess is module.preprocess is preprocess and callable(vision.preprocess)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    policy=st.sampled_from(["crop", "squish"]),
    resample=st.sampled_from(["nearest", "bilinear", "bicubic", "lanczos"]),
    seed=st.integers(0, 2**31),
)
def test_a_grey_image_resized_as_grey_equals_its_rgb_copy(h, w, size, policy, resample, seed):
    """preprocess keeps grey images as "L" until after the resize (a quarter of the memory);
    Pillow resamples each band alike, so the result equals resizing the RGB copy."""
    grey = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    cfg = PreprocessConfig(size, resize_policy=policy, resample=resample)
    as_rgb = Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(preprocess(grey, cfg), preprocess(as_rgb, cfg))


def test_a_16bit_grey_file_preprocesses_as_its_8bit_rgb(tmp_path):
    wide = np.random.default_rng(3).integers(0, 65536, (30, 50), dtype=np.uint16)
    wide.flat[:4] = (0, 128, 65407, 65535)  # the rounding and clipping edges
    Image.fromarray(wide).save(tmp_path / "grey16.png")
    eight = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)  # float64 reference
    cfg = PreprocessConfig((16, 24))
    rgb8 = np.repeat(eight[..., None], 3, axis=2)
    np.testing.assert_array_equal(preprocess(tmp_path / "grey16.png", cfg), preprocess(rgb8, cfg))

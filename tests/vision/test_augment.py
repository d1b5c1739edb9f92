"""TrainTransform: seeded random-resized-crop, optional flip, jitter, then the shared normalise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_cv.vision import augment
from fastcore_cv.vision.augment import TrainTransform, jitter, random_resized_crop_box
from fastcore_cv.vision.preprocessing import PreprocessConfig, preprocess

CFG = PreprocessConfig(16)


def rng(seed=0):
    return np.random.default_rng(seed)


@settings(max_examples=50, deadline=None)
@given(w=st.integers(1, 400), h=st.integers(1, 400), seed=st.integers(0, 2**31))
def test_crop_box_lies_inside_the_image_with_area_and_ratio_in_range(w, h, seed):
    left, top, right, bottom = random_resized_crop_box(w, h, rng(seed))
    assert 0 <= left < right <= w + 1e-9 and 0 <= top < bottom <= h + 1e-9
    bw, bh = right - left, bottom - top
    area = bw * bh / (w * h)
    in_range = 0.35 - 1e-9 <= area <= 1 + 1e-9 and 3 / 4 - 1e-9 <= bw / bh <= 4 / 3 + 1e-9
    fallback = math.isclose(bw, w) or math.isclose(bh, h)  # no try fitted: centred, clamped
    assert in_range or fallback


def test_same_seed_same_output_different_seed_different():
    t = TrainTransform(CFG)
    img = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(t(img, rng(1)), t(img, rng(1)))
    assert not np.array_equal(t(img, rng(1)), t(img, rng(2)))


def test_without_randomness_it_equals_the_validation_transform():
    # Whole-image crop, no flip, no jitter: exactly preprocess with "squish" - the same
    # resample and the same normalize, not a copy.
    img = np.random.default_rng(3).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    cfg = PreprocessConfig(16, resize_policy="squish", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    t = TrainTransform(cfg, scale=(1, 1), ratio=(1, 1), flip=False, brightness=0, contrast=0)
    np.testing.assert_array_equal(t(img, rng()), preprocess(img, cfg))


def test_augment_ends_in_the_shared_normalize(monkeypatch, imaging):
    calls = []
    real = augment.normalize
    monkeypatch.setattr(augment, "normalize", lambda *a, **k: calls.append(1) or real(*a, **k))
    TrainTransform(CFG)(imaging.asymmetric_rgb(), rng())
    assert calls == [1]


def test_flip_happens_about_half_the_time_and_never_when_off(imaging):
    img = imaging.asymmetric_rgb(32, 32)
    cfg = PreprocessConfig(32)
    plain = preprocess(img, cfg)
    opts = dict(scale=(1, 1), ratio=(1, 1), brightness=0, contrast=0)
    on = TrainTransform(cfg, flip=True, **opts)
    flipped = [not np.array_equal(on(img, rng(s)), plain) for s in range(40)]
    assert 8 <= sum(flipped) <= 32
    for s in range(40):
        out = on(img, rng(s))
        assert np.array_equal(out, plain) or np.array_equal(out, plain[:, :, ::-1])
    off = TrainTransform(cfg, flip=False, **opts)
    assert all(np.array_equal(off(img, rng(s)), plain) for s in range(40))


def test_jitter_stays_in_range_and_moves_brightness_within_bounds():
    p = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    for s in range(20):
        out = jitter(p, rng(s), brightness=0.2, contrast=0.2)
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
        ratio = out.mean() / p.mean()
        assert 0.75 < ratio < 1.25
    np.testing.assert_array_equal(jitter(p, rng(), 0, 0), p.astype(np.float32))


def test_decode_min_side_keeps_the_smallest_crop_at_full_resolution():
    t = TrainTransform(PreprocessConfig(224))
    side = t.decode_min_side
    # smallest crop side = side * sqrt(0.35 / (4/3)) must still be >= 224
    assert side * math.sqrt(0.35 / (4 / 3)) >= 224 > (side - 2) * math.sqrt(0.35 / (4 / 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": (0, 1)}, "scale"),
        ({"scale": (0.5, 0.4)}, "scale"),
        ({"ratio": (2, 1)}, "ratio"),
        ({"brightness": 1.0}, "brightness"),
        ({"contrast": -0.1}, "contrast"),
    ],
)
def test_bad_options_raise_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainTransform(CFG, **kwargs)


def test_output_shape_and_dtype(images):
    out = np.empty((3, 16, 16), np.float32)
    assert TrainTransform(CFG)(images["exif_rotated.jpg"], rng(), out=out) is out

"""Training transforms (Pillow + NumPy): random-resized-crop, optional flip, light jitter.

Every random choice comes from the ``numpy.random.Generator`` passed in, so a seed gives the
same augmented images. The last step is ``preprocess.normalize``: the same normalisation as
validation and the Predictor, not a copy of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fastcore_cv.vision.preprocessing import (
    MAX_PIXELS,
    RESAMPLING,
    ImageSource,
    PreprocessConfig,
    load_image,
    normalize,
)

# fastai/torchvision default to scale=(0.08, 1): tuned for ImageNet training (large photos,
# ~90 epochs). Here images are small (8x8 digits upscaled, 96x96 texture crops) and fine-tuning
# runs a few epochs; an 8% crop keeps 28% of each side, so a digit's distinguishing stroke is
# often cut away and the label becomes wrong. 0.35 keeps >= 59% of each side.
DEFAULT_SCALE = (0.35, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> tuple[float, float, float, float]:
    """A crop box (left, top, right, bottom) covering ``scale`` of the area at aspect ``ratio``.

    torchvision's rule: 10 tries of area ~ U(scale), log-aspect ~ U(log ratio); if none fits,
    the largest centred box with the aspect clamped into ``ratio``.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return (left, top, left + w, top + h)
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, width / aspect) if width / height <= aspect else (height * aspect, height)
    left, top = (width - w) / 2, (height - h) / 2
    return (left, top, left + w, top + h)


def jitter(
    pixels: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float
) -> np.ndarray:
    """Scale contrast about the image's mean grey, then brightness; float32 in 0..255."""
    x = pixels.astype(np.float32)
    c = rng.uniform(1 - contrast, 1 + contrast) if contrast else 1.0
    b = rng.uniform(1 - brightness, 1 + brightness) if brightness else 1.0
    grey = float(x.mean())
    x -= grey
    x *= c
    x += grey
    x *= b
    return np.clip(x, 0.0, 255.0, out=x)


@dataclass(frozen=True)
class TrainTransform:
    """Image -> float32 (3, H, W) for training. Call as ``transform(image, rng)``.

    ``flip``: horizontal flip with p=0.5; turn it off when mirror images change the class
    (digits, letters, road signs). ``brightness``/``contrast``: factors drawn from 1 +- value.
    """

    config: PreprocessConfig
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale: expected 0 < low <= high <= 1, got {self.scale!r}")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"ratio: expected 0 < low <= high, got {self.ratio!r}")
        for name in ("brightness", "contrast"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(
                    f"{name}: expected a number in [0, 1), got {getattr(self, name)!r}"
                )

    @property
    def decode_min_side(self) -> int:
        """Shorter side to decode at so the smallest crop still has >= size pixels per side."""
        side_fraction = math.sqrt(self.scale[0] / self.ratio[1])
        return math.ceil(max(self.config.size) / side_fraction)

    def __call__(
        self, image: ImageSource, rng: np.random.Generator, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        cfg = self.config
        min_side = self.decode_min_side if cfg.draft else None
        img = load_image(image, min_side=min_side, max_pixels=self.max_pixels)
        box = random_resized_crop_box(img.width, img.height, rng, self.scale, self.ratio)
        th, tw = cfg.size
        img = img.resize((tw, th), RESAMPLING[cfg.resample], box=box)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.asarray(img)
        if self.brightness or self.contrast:
            pixels = jitter(pixels, rng, self.brightness, self.contrast)
        return normalize(pixels, cfg.mean, cfg.std, out=out)

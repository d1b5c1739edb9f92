"""THE image preprocessing: decode (decode.py), resize + centre crop, normalise.

It exists once. Training's validation transform and the torch-free Predictor both call
``preprocess``, and ``PreprocessConfig`` travels as JSON inside the ONNX file, so the two
cannot drift. Pillow + NumPy only: importing this module must never import torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from fastcore_cv.vision.decode import (  # noqa: F401  (re-exported: one import for callers)
    MAX_PIXELS,
    ImageError,
    ImageSource,
    load_image,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("crop", "squish")
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input; stored in the ONNX metadata as JSON.

    ``resize_policy``: "crop" scales the shorter side to ``size / crop_pct`` and takes the
    centre (fastai's Resize, crop_pct=1; timm's ImageNet eval uses 0.875); "squish" scales
    both sides to ``size`` (the whole photo is kept, its aspect ratio is not).
    ``draft``: let the JPEG decoder shrink big photos by 2/4/8 (DCT scaling) while keeping
    the shorter side >= what the resize needs. Measured at size 224 (2 shared cores): a 12 MP
    JPEG 195 -> 50 ms, a 640x480 one 6.8 -> 1.7 ms. Off = exact full-resolution decode.
    """

    size: tuple[int, int] = (224, 224)  # (height, width); an int means square
    resize_policy: str = "crop"
    crop_pct: float = 1.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bilinear"
    draft: bool = True

    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        size = (self.size, self.size) if isinstance(self.size, int) else self.size
        try:
            size = tuple(size)
        except TypeError:
            raise TypeError(f"size: expected an int or (h, w), got {self.size!r}") from None
        if len(size) != 2 or not all(_is_int(s) and s >= 1 for s in size):
            raise ValueError(f"size: expected an int >= 1 or (height, width), got {self.size!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.resize_policy not in RESIZE_POLICIES:
            got = self.resize_policy
            raise ValueError(f"resize_policy: expected one of {list(RESIZE_POLICIES)}, got {got!r}")
        if self.resample not in RESAMPLING:
            raise ValueError(f"resample: expected one of {list(RESAMPLING)}, got {self.resample!r}")
        if not (_is_real(self.crop_pct) and 0.0 < self.crop_pct <= 1.0):
            raise ValueError(f"crop_pct: expected a number in (0, 1], got {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                triple = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise TypeError(f"{name}: expected 3 numbers (R, G, B), got {value!r}") from None
            if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
                raise ValueError(f"{name}: expected 3 finite numbers (R, G, B), got {value!r}")
            if name == "std" and min(triple) <= 0:
                raise ValueError(f"std: every entry must be > 0, got {value!r}")
            object.__setattr__(self, name, triple)
        if not isinstance(self.draft, bool):
            raise TypeError(f"draft: expected a bool, got {type(self.draft).__name__}")

    @property
    def decode_min_side(self) -> int:
        """Shorter side the decoded image needs so that resizing never upsamples a draft."""
        need = max(self.size)
        return math.ceil(need / self.crop_pct) if self.resize_policy == "crop" else need

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, with a format version."""
        out: dict[str, Any] = {"version": self.VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Rebuild from ``to_dict``; unknown keys or a newer version raise (never guess)."""
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise ValueError(f"version: preprocessing format {version!r} is not {cls.VERSION}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"data: unknown preprocessing keys {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessConfig:
        return cls.from_dict(json.loads(text))


def resize_crop(img: Image.Image, config: PreprocessConfig) -> Image.Image:
    """The validation geometry: centre crop (or squish) to ``config.size`` in one resample.

    Cropping in source coordinates and resampling once (Pillow's float ``box``) equals
    resize-then-crop without the rounding of an intermediate image.
    """
    th, tw = config.size
    w, h = img.size
    if config.resize_policy == "squish":
        box = (0.0, 0.0, float(w), float(h))
    else:
        k = max(tw / (config.crop_pct * w), th / (config.crop_pct * h))  # output px per source px
        bw, bh = min(tw / k, w), min(th / k, h)  # min: float rounding must not leave the image
        box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
    return img.resize((tw, th), RESAMPLING[config.resample], box=box)


def normalize(
    pixels: np.ndarray,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """HxWx3 pixels in 0..255 (uint8 or float) -> float32 3xHxW: ``(p / 255 - mean) / std``."""
    p = np.asarray(pixels)
    if p.ndim != 3 or p.shape[2] != 3:
        raise ValueError(f"pixels: expected an HxWx3 array, got shape {p.shape}")
    h, w, _ = p.shape
    if out is None:
        out = np.empty((3, h, w), np.float32)
    elif out.shape != (3, h, w) or out.dtype != np.float32:
        raise ValueError(f"out: expected float32 {(3, h, w)}, got {out.dtype} {out.shape}")
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    scale = (1.0 / (255.0 * s)).astype(np.float32)[:, None, None]
    shift = (m / s).astype(np.float32)[:, None, None]
    np.multiply(p.transpose(2, 0, 1), scale, out=out, casting="unsafe")
    out -= shift
    return out


def preprocess(
    image: ImageSource,
    config: PreprocessConfig | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One image -> float32 (3, H, W): decode, RGB, EXIF, resize + centre crop, normalise.

    A grey photo is resized as grey and made RGB after (the same pixels: Pillow resamples each
    band alike), so a 50 MP grey image costs 50 MB here instead of 200 MB of RGB.
    """
    config = config or PreprocessConfig()
    min_side = config.decode_min_side if config.draft else None
    img = load_image(image, min_side=min_side, max_pixels=max_pixels, keep_grey=True)
    small = resize_crop(img, config).convert("RGB")
    return normalize(np.asarray(small), config.mean, config.std, out=out)


def preprocess_batch(
    images: list[ImageSource] | tuple[ImageSource, ...],
    config: PreprocessConfig | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Several images -> float32 (N, 3, H, W); the first bad image raises ImageError."""
    config = config or PreprocessConfig()
    images = list(images)
    out = np.empty((len(images), 3, *config.size), np.float32)
    for i, image in enumerate(images):
        preprocess(image, config, max_pixels=max_pixels, out=out[i])
    return out


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

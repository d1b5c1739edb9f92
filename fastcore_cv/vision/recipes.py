"""Measured training recipes as plain values (torch-free, so the CLI can show their defaults
without importing torch); ``vision.transfer.vision_learner`` and ``fine_tune`` take them."""

from __future__ import annotations

from typing import Any

# The heads ``vision.models.make_head`` builds (the ``head`` of vision_learner); a
# checkpoint's sidecar names one of them (export/checkpoint.py).
HEADS = ("linear", "fastai")

# The embedded digits data's measured recipe: 1.1% / 1.4% / 1.4% error on split seeds
# 42 / 1 / 2; 56 s on 2 cores (150-160 s while other jobs shared them). 32 px is enough for
# the 8x8 originals (48 px: no better, 2x slower); augmentation hurt at this budget (random
# crops cut strokes: 5.6% vs 1.7% at 5 epochs; milder crops, scale >= 0.8: 3.3%).
DIGITS_RECIPE: dict[str, dict[str, Any]] = {
    "data": dict(size=32, bs=64, augment=False, flip=False),
    "fine_tune": dict(epochs=8, base_lr=None),
}

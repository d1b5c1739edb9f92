"""Export a torch classifier to ONE checked ONNX file that carries its classes and preprocessing.

The graph maps images (N, 3, H, W) float32 to class probabilities (softmax inside the graph,
so every runtime gives the same numbers the Learner reports). The batch dimension is
dynamic. The file is written atomically and only after ``onnx.checker`` (full check) and a
parity check against the torch model pass: a file on disk is a file that works.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import fastcore_cv
from fastcore_cv.export import calibration
from fastcore_cv.export import metadata as meta
from fastcore_cv.export.errors import ExportError
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.output_files import atomic_path, check_writable, size_text
from fastcore_cv.vision.preprocessing import (
    ImageError,
    ImageSource,
    PreprocessConfig,
    preprocess,
    preprocess_batch,
)

INPUT_NAME = "image"
# Max abs difference of probabilities between torch and onnxruntime that export accepts.
# Measured: small CNN 4.5e-8, EfficientNet-Lite0 6.7e-6; every export reports its own
# (ExportReport.parity_max_abs_diff; the demo's is in its report.md, step 5).
TOLERANCE = 1e-4
MAX_BATCH = 4096


class _Head(nn.Module):
    """The exported function: the model, then softmax (or nothing), named ``image`` in."""

    def __init__(self, model: nn.Module, softmax: bool) -> None:
        super().__init__()
        self.model, self.softmax = model, softmax

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.model(image)
        return torch.softmax(out, dim=1) if self.softmax else out


@dataclass
class ExportReport:
    """What ``to_onnx`` wrote and how well the file agrees with torch."""

    path: Path
    size_bytes: int
    classes: tuple[str, ...]
    opset: int
    ir_version: int
    nodes: int
    output: str
    parity_max_abs_diff: float
    parity_inputs: str  # "5 images" or "random input"
    top1_agreement: float
    seconds: float
    info: meta.ModelInfo = field(repr=False)

    @property
    def calibration(self) -> dict[str, Any] | None:
        """Temperature, threshold, coverage and accuracy on accepted (None: no valid data)."""
        return self.info.calibration

    def __str__(self) -> str:
        cal = self.info.calibration
        return (
            f"exported {self.path} ({size_text(self.size_bytes)}, opset {self.opset}, "
            f"{self.nodes} nodes, {len(self.classes)} classes, {self.output}) in "
            f"{self.seconds:.1f} s; parity vs torch on {self.parity_inputs}: max abs diff "
            f"{self.parity_max_abs_diff:.1e}, top-1 agreement {self.top1_agreement:.0%}"
            f"; model id {self.info.model_id}"
            + (f"\ncalibrated: {calibration.describe(cal)}" if cal else "")
        )


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode on torch's own layers: the kernel-backed Linear layers
    of ``fastcore_cv.nn`` call NumPy, which torch.export cannot trace."""
    net = copy.deepcopy(model).eval()
    _plain_torch(net)
    return net


def _plain_torch(module: nn.Module) -> None:
    """In place: fastcore_cv.nn.Linear -> nn.Linear, LinearReLU -> Linear + ReLU (same
    Parameters). A LinearReLU that ``to_kernels`` fused leaves an Identity where its ReLU was;
    one that ``make_head`` built directly has none, so the ReLU always goes with the Linear."""
    for name, child in list(module.named_children()):
        kind = type(child).__module__, type(child).__name__
        if kind in (("fastcore_cv.nn", "Linear"), ("fastcore_cv.nn", "LinearReLU")):
            lin = nn.Linear(child.in_features, child.out_features, child.bias is not None)
            lin.weight, lin.bias = child.weight, child.bias
            relu = getattr(child, "activation", None) == "relu"
            setattr(module, name, nn.Sequential(lin, nn.ReLU()) if relu else lin)
        elif kind == ("fastcore_cv.backend", "FusedAway"):
            setattr(module, name, nn.Identity())
        else:
            _plain_torch(child)


def to_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    classes: Sequence[str],
    preprocess_config: PreprocessConfig,
    example_input: torch.Tensor | None = None,
    opset: int | None = None,
    verify_images: Sequence[ImageSource] | None = None,
    softmax: bool = True,
    tolerance: float = TOLERANCE,
    valid: Any = None,
    target_accuracy: float = calibration.TARGET_ACCURACY,
    training: dict[str, Any] | None = None,
) -> ExportReport:
    """Write ``model`` (images -> logits) to ``path`` as one ONNX file with metadata.

    ``verify_images``: photos (paths, bytes, arrays...) preprocessed exactly as the Predictor
    will; the probabilities from torch and onnxruntime must agree within ``tolerance`` or
    ExportError is raised and nothing is written. Without them a random batch is compared.
    ``softmax=False`` exports logits (the Predictor then applies softmax itself).
    ``valid``: labelled photos (a folder of class folders, an ImageDataLoaders or (image,
    class) pairs): the file's outputs on them fit a temperature and the confidence threshold
    that gives ``target_accuracy`` on the accepted ones (export/calibration.py); without
    them every answer is accepted. ``training``: a summary to store (``export_learner``
    passes ``metadata.training_summary``).
    """
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    classes = meta.check_classes(classes)
    if not isinstance(preprocess_config, PreprocessConfig):
        got = type(preprocess_config).__name__
        raise TypeError(f"preprocess_config: expected a PreprocessConfig, got {got}")
    check_writable(path, "path")  # before the export, not after
    h, w = preprocess_config.size
    if example_input is None:
        example_input = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    _check_example(example_input, (h, w))
    head = _Head(exportable(model), softmax).eval()
    with torch.no_grad():
        out = head(example_input)
    if out.ndim != 2 or out.shape[1] != len(classes):
        raise ValueError(
            f"classes: the model gives outputs of shape {tuple(out.shape)} but {len(classes)} "
            f"classes were given ({list(classes)[:5]}...); expected (N, {len(classes)})"
        )
    calibration.check_target(target_accuracy)
    images, labels, _ = calibration.labelled_set(valid, classes)
    info = meta.ModelInfo(
        classes,
        preprocess_config,
        fastcore_cv.__version__,
        INPUT_NAME,
        "probabilities" if softmax else "logits",
        created=meta.now_utc(),
        versions=meta.library_versions("torch"),
        training=training,
    )
    program = _export(head, example_input, opset)
    program.model.metadata_props.update(info.to_props())
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"model: the exported graph fails onnx.checker: {e}") from e
        if verify_images:
            x = preprocess_batch(list(verify_images), preprocess_config)
            inputs = f"{len(x)} images"
        else:
            x, inputs = example_input.numpy(), "random input"
        diff, agree = _parity(model, str(tmp), x, softmax)
        if not diff <= tolerance:  # also catches NaN
            raise ExportError(
                f"model: onnxruntime and torch disagree on {inputs}: max abs difference of "
                f"{'probabilities' if softmax else 'logits'} {diff:.2e} > tolerance "
                f"{tolerance:.0e}; the file was not written"
            )
        info = dataclasses.replace(info, model_id=meta.model_id(proto, preprocess_config, classes))
        if images:
            info = dataclasses.replace(
                info, calibration=calibrate_file(tmp, images, labels, target_accuracy)
            )
        del proto.metadata_props[:]
        for key, value in info.to_props().items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
    path = Path(path)
    return ExportReport(
        path=path,
        size_bytes=path.stat().st_size,
        classes=classes,
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0),
        ir_version=proto.ir_version,
        nodes=len(proto.graph.node),
        output=info.output,
        parity_max_abs_diff=diff,
        parity_inputs=inputs,
        top1_agreement=agree,
        seconds=time.perf_counter() - start,
        info=info,
    )


def export_learner(
    learn: Any, path: str | Path, *, dls: Any = None, n_verify: int = 16, **kwargs: Any
) -> ExportReport:
    """``to_onnx`` for a trained Learner: classes and preprocessing from its ImageDataLoaders
    (``dls``, else the one the learner was built with), parity on up to ``n_verify`` of its
    validation photos, calibration on all of them, and the summary of its training."""
    dls = dls or getattr(learn, "source_dls", None) or learn.dls
    classes = getattr(dls, "classes", None)
    config = getattr(dls, "preprocess_config", None)
    if classes is None or config is None:
        raise ValueError(
            "dls: no .classes/.preprocess_config found (an ImageDataLoaders has both); pass "
            "export_learner(learn, path, dls=dls) or call to_onnx(model, path, classes=..., "
            "preprocess_config=...)"
        )
    valid_ds = getattr(dls, "valid_ds", None)
    verify = list(valid_ds.items[:n_verify]) if valid_ds is not None and n_verify else None
    kwargs.setdefault("verify_images", verify)
    if valid_ds is not None and len(valid_ds):
        kwargs.setdefault("valid", dls)
    kwargs.setdefault("training", meta.training_summary(learn, dls))
    return to_onnx(learn.model, path, classes=classes, preprocess_config=config, **kwargs)


def _check_example(x: Any, size: tuple[int, int]) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"example_input: expected a float32 tensor, got {_describe(x)}")
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != size:
        raise ValueError(
            f"example_input: expected shape (N, 3, {size[0]}, {size[1]}) to match "
            f"preprocess_config.size, got {tuple(x.shape)}"
        )
    if x.shape[0] < 2:
        # torch.export specialises a batch of 1 to a constant: the dynamic batch needs >= 2.
        raise ValueError(f"example_input: needs a batch of at least 2, got {x.shape[0]}")


def _describe(x: Any) -> str:
    return f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision-missing notices, deprecation warnings)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _export(head: nn.Module, example: torch.Tensor, opset: int | None) -> Any:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with _quiet_exporter():
            return torch.onnx.export(
                head,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=["probabilities" if head.softmax else "logits"],
                dynamic_shapes={INPUT_NAME: {0: batch}},
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ExportError(
            f"model: torch.onnx.export failed ({type(e).__name__}: {first}); Python `if` on "
            "tensor values and ops without an ONNX translation cannot be exported"
        ) from e


def _parity(model: nn.Module, onnx_path: str, x: np.ndarray, softmax: bool) -> tuple[float, float]:
    """(max abs difference, top-1 agreement) of torch vs onnxruntime on ``x``, 32 at a time."""
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    was_training = model.training
    model.eval()
    diffs, agree = [], 0
    try:
        with torch.no_grad():
            for i in range(0, len(x), 32):
                chunk = x[i : i + 32]
                ref = model(torch.from_numpy(np.ascontiguousarray(chunk)))
                ref = (torch.softmax(ref, dim=1) if softmax else ref).numpy()
                got = session.run(None, {INPUT_NAME: chunk})[0]
                diffs.append(np.max(np.abs(got.astype(np.float64) - ref)))
                agree += int((got.argmax(1) == ref.argmax(1)).sum())
    finally:
        model.train(was_training)
    return float(np.max(diffs)), agree / len(x)  # np.max keeps a NaN (a plain max() may not)


def calibrate_file(
    path: str | Path, images: Sequence[ImageSource], labels: Sequence[int], target: float
) -> dict[str, Any]:
    """Fit the temperature and threshold on the outputs of the file at ``path``, computed by
    the Predictor itself (same session settings, batches of 32), on the readable ``images``."""
    predictor = Predictor(path, warmup=0)
    arrays, kept = [], []
    for image, label in zip(images, labels, strict=True):
        try:
            arrays.append(preprocess(image, predictor.config, max_pixels=predictor.max_pixels))
            kept.append(label)
        except ImageError as e:
            warnings.warn(f"valid: skipped a bad image: {e}", stacklevel=3)
    if not arrays:
        raise ValueError("valid: no readable labelled images to calibrate with")
    out = np.concatenate(
        [predictor.raw_outputs(np.stack(arrays[i : i + 32])) for i in range(0, len(arrays), 32)]
    )
    return calibration.calibrate(out, np.asarray(kept), predictor.info.output, target)

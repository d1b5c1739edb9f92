"""``Predictor``: one exported .onnx file -> labels, torch-free, tuned for one photo at a time.

Build once, predict many (as onnxruntime's InferenceSession). The file's metadata gives the
classes and the PreprocessConfig, and images go through ``vision.preprocessing.preprocess``,
the very function training's validation uses, so the two cannot drift. Importing this
module never imports torch (a test checks it).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from fastcore_cv.checks import check_int
from fastcore_cv.export import metadata as meta
from fastcore_cv.export.errors import ModelFileError
from fastcore_cv.output_files import atomic_path
from fastcore_cv.progress import Progress
from fastcore_cv.vision.files import get_image_files
from fastcore_cv.vision.preprocessing import (
    MAX_PIXELS,
    ImageError,
    ImageSource,
    preprocess,
    preprocess_batch,
)

WARMUP_RUNS = 3  # the first runs are 1.5-3x slower (allocations, NCHWc packing): pay at load


@dataclass(frozen=True)
class Prediction:
    """The answer for one image: best class, its probability, the top k, and the time taken
    from the raw input (decode included) to the label."""

    label: str
    index: int
    probability: float
    top_k: list[tuple[str, float]]
    latency_ms: float
    probabilities: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-able: label, index, probability, top_k [{label, probability}], latency_ms."""
        return {
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top_k": [{"label": c, "probability": p} for c, p in self.top_k],
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass(frozen=True)
class FolderSummary:
    """What ``predict_folder`` did: images seen, how many failed, where the CSV is."""

    images: int
    errors: int
    csv_path: Path
    seconds: float


def session_options(threads: int) -> ort.SessionOptions:
    """Single-image latency settings: ORT_ENABLE_ALL (NCHWc layouts) measured 2.7x over
    EXTENDED; no spinning threads on shared cores. No gain measured (EfficientNet-Lite0, Zen 4,
    interleaved runs) from set_denormal_as_zero, kernel_dispatch_policy=latency, the
    mlas.nchwc_* knobs or disabling NhwcTransformer (int8 1.25x slower); memory arena + pattern
    off cost ~3%. fp32 pointwise convs already run near the core's sgemm peak (99 vs 102
    GFLOP/s, bench/RESULTS.md "predict profile"), so settings cannot buy much there."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class Predictor:
    """Predict classes of photos with an exported model file (fp32 or int8).

    ``threads``: onnxruntime intra-op threads (1 is the lowest-latency choice on a busy
    2-core machine). ``max_pixels``: images with more pixels are refused (ImageError).
    Thread-safe: several threads may call ``predict`` at once (the server does).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int = 1,
        *,
        max_pixels: int = MAX_PIXELS,
        warmup: int = WARMUP_RUNS,
    ) -> None:
        check_int(threads, "threads")
        check_int(max_pixels, "max_pixels")
        self.path, self.threads, self.max_pixels = Path(path), threads, max_pixels
        self.session = _open_session(self.path, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        self.info = meta.parse(props, self.path)
        self.classes = list(self.info.classes)
        self.config = self.info.preprocess
        self.input_name = self.info.input_name
        self._check_signature()
        if warmup:
            self._warm_up(warmup)

    def __repr__(self) -> str:
        q = f", {self.info.quantization}" if self.info.quantization else ""
        return (
            f"Predictor({str(self.path)!r}, {len(self.classes)} classes, "
            f"size {self.config.size}, threads={self.threads}{q})"
        )

    def _warm_up(self, runs: int) -> None:
        """Run the model (and once the JPEG decoder) before the first real request: the
        first runs are 1.5-3x slower, and a cold first photo took 15 ms instead of 6."""
        dummy = np.zeros((1, 3, *self.config.size), np.float32)
        for _ in range(runs):
            self.run(dummy)
        w, h = 2 * self.config.size[1], 2 * self.config.size[0]
        if w * h <= self.max_pixels:
            buf = io.BytesIO()
            Image.new("RGB", (w, h)).save(buf, "JPEG")
            self.predict(buf.getvalue())

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [i.name for i in inputs]
        if len(inputs) != 1 or names[0] != self.input_name:
            raise ModelFileError(
                f"model: {self.path} has inputs {names}; expected one input named "
                f"{self.input_name!r} (from its metadata)"
            )
        shape = inputs[0].shape
        if len(shape) != 4:
            raise ModelFileError(
                f"model: {self.path} input {self.input_name!r} has rank {len(shape)} "
                f"(shape {shape}); expected rank 4 (N, 3, H, W)"
            )
        if inputs[0].type != "tensor(float)":
            raise ModelFileError(
                f"model: {self.path} input has type {inputs[0].type}; expected tensor(float)"
            )
        want = [3, *self.config.size]
        if any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want, strict=True)):
            raise ModelFileError(
                f"model: {self.path} input shape {shape} does not match the preprocessing "
                f"in its metadata (N, {want[0]}, {want[1]}, {want[2]})"
            )
        out = outputs[0].shape if len(outputs) == 1 else None
        n = len(self.classes)
        if out is None or len(out) != 2 or (isinstance(out[1], int) and out[1] != n):
            raise ModelFileError(
                f"model: {self.path} outputs {[o.shape for o in outputs]}; expected one "
                f"(N, {len(self.classes)}) output for its {len(self.classes)} classes"
            )

    def run(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed images (N, 3, H, W) float32 -> (N, C) probabilities (no decoding)."""
        out = self.session.run(None, {self.input_name: x})[0]
        if self.info.output == "logits":
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out

    def _answer(self, probs: np.ndarray, top_k: int, latency_ms: float) -> Prediction:
        k = max(1, min(int(top_k), len(self.classes)))
        order = np.argsort(-probs, kind="stable")[:k]
        best = int(order[0])
        return Prediction(
            label=self.classes[best],
            index=best,
            probability=float(probs[best]),
            top_k=[(self.classes[int(i)], float(probs[i])) for i in order],
            latency_ms=latency_ms,
            probabilities=probs,
        )

    def predict(self, image: ImageSource, top_k: int = 5) -> Prediction:
        """One image (path, bytes, file, PIL image or HxWx3 array) -> Prediction.

        A bad image raises ImageError naming it; the Predictor stays usable."""
        start = time.perf_counter()
        x = preprocess(image, self.config, max_pixels=self.max_pixels)
        probs = self.run(x[None])[0]
        return self._answer(probs, top_k, (time.perf_counter() - start) * 1e3)

    def predict_batch(
        self, images: Sequence[ImageSource], top_k: int = 5, batch_size: int = 32
    ) -> list[Prediction]:
        """Several images, run ``batch_size`` at a time; each latency_ms is its batch's time
        divided by the batch's size. The first bad image raises ImageError naming it."""
        images = list(images)
        out: list[Prediction] = []
        for i in range(0, len(images), batch_size):
            start = time.perf_counter()
            chunk = images[i : i + batch_size]
            probs = self.run(preprocess_batch(chunk, self.config, max_pixels=self.max_pixels))
            each = (time.perf_counter() - start) * 1e3 / len(chunk)
            out.extend(self._answer(p, top_k, each) for p in probs)
        return out

    def predict_folder(
        self,
        folder: str | os.PathLike,
        csv_path: str | os.PathLike,
        *,
        recurse: bool = True,
        progress: str = "auto",
    ) -> FolderSummary:
        """Predict every image under ``folder`` into a CSV (path, label, probability, error).

        A bad file gets a row with its error, never a crash. ``progress``: "auto" (a bar on a
        terminal, plain lines in logs or under CI), "bar", "plain" or "silent" (as the Learner)."""
        start = time.perf_counter()
        files = get_image_files(folder, recurse=recurse)
        errors = 0
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "probability", "error"])
            for path in _progress(files, progress):
                try:
                    p = self.predict(path, top_k=1)
                    writer.writerow([str(path), p.label, f"{p.probability:.6f}", ""])
                except ImageError as e:
                    errors += 1
                    why = f"{e.reason}: {e.detail}" if e.detail else e.reason
                    writer.writerow([str(path), "", "", why])
        return FolderSummary(len(files), errors, Path(csv_path), time.perf_counter() - start)


def _open_session(path: Path, threads: int) -> ort.InferenceSession:
    if path.is_dir():
        raise ModelFileError(f"model: {path} is a folder; expected an .onnx file")
    if not path.is_file():
        raise ModelFileError(f"model: {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model: {path} is empty (0 bytes); expected an .onnx file")
    try:
        return ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFileError(
            f"model: {path} is not a loadable ONNX file ({type(e).__name__}: {first[:300]})"
        ) from e


def _progress(files: list[Path], mode: str) -> Iterable[Path]:
    with Progress(len(files), "predict", mode, unit="images") as bar:
        for path in files:
            yield path
            bar.update()

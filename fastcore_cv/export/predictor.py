"""``Predictor``: one exported .onnx file -> labels, torch-free, tuned for one photo at a time.

Build once, predict many (as onnxruntime's InferenceSession). The file's metadata gives the
classes and the PreprocessConfig, and images go through ``vision.preprocessing.preprocess``,
the very function training's validation uses, so the two cannot drift. Importing this
module never imports torch (a test checks it).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from fastcore_cv.checks import check_int
from fastcore_cv.export import calibration
from fastcore_cv.export import metadata as meta
from fastcore_cv.export.batch import BATCH_SIZE, write_csv
from fastcore_cv.export.errors import ModelFileError
from fastcore_cv.vision.files import get_image_files
from fastcore_cv.vision.preprocessing import (
    MAX_PIXELS,
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
    # probability >= the threshold (the file's calibrated one unless overridden); when not,
    # the answer is "not sure" and ``label`` is the best guess (export/calibration.py).
    accepted: bool = True
    threshold: float = 0.0
    decode_ms: float = field(default=0.0, repr=False, compare=False)  # predict() only
    inference_ms: float = field(default=0.0, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-able: label, index, probability, top_k [{label, probability}], latency_ms."""
        return {
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top_k": [{"label": c, "probability": p} for c, p in self.top_k],
            "latency_ms": round(self.latency_ms, 3),
            "accepted": self.accepted,
            "threshold": self.threshold,
        }

    def _repr_html_(self) -> str:
        """The label and the top k as bars, inline in a notebook (torch-free display.py)."""
        from fastcore_cv.display import prediction_html

        return prediction_html(self)


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
        self.temperature, self.threshold = self.info.temperature, self.info.threshold
        self._check_signature()
        if warmup:
            self._warm_up(warmup)

    def __repr__(self) -> str:
        q = f", {self.info.quantization}" if self.info.quantization else ""
        return (
            f"Predictor({str(self.path)!r}, {len(self.classes)} classes, "
            f"size {self.config.size}, threads={self.threads}{q})"
        )

    def warm_up(self, runs: int = WARMUP_RUNS) -> None:
        """Pay the slow first runs now (the server calls this before it reports ready)."""
        self._warm_up(runs)

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
        """Preprocessed images (N, 3, H, W) float32 -> (N, C) probabilities (no decoding),
        temperature-scaled when the file carries a temperature."""
        return calibration.probabilities(self.raw_outputs(x), self.info.output, self.temperature)

    def raw_outputs(self, x: np.ndarray) -> np.ndarray:
        """The graph's own outputs for ``x`` (probabilities or logits, as exported; no T)."""
        return self.session.run(None, {self.input_name: x})[0]

    def _answer(
        self,
        probs: np.ndarray,
        top_k: int,
        latency_ms: float,
        threshold: float | None = None,
        **times: float,
    ) -> Prediction:
        threshold = self.threshold if threshold is None else check_threshold(threshold)
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
            accepted=bool(probs[best] >= threshold),
            threshold=float(threshold),
            **times,
        )

    def predict(
        self, image: ImageSource, top_k: int = 5, threshold: float | None = None
    ) -> Prediction:
        """One image (path, bytes, file, PIL image or HxWx3 array) -> Prediction.

        ``threshold``: accept at this probability instead of the file's calibrated one.
        A bad image raises ImageError naming it; the Predictor stays usable."""
        start = time.perf_counter()
        x = preprocess(image, self.config, max_pixels=self.max_pixels)
        decoded = time.perf_counter()
        probs = self.run(x[None])[0]
        end = time.perf_counter()
        return self._answer(probs, top_k, (end - start) * 1e3, threshold,
                            decode_ms=(decoded - start) * 1e3,
                            inference_ms=(end - decoded) * 1e3)  # fmt: skip

    def predict_batch(
        self,
        images: Sequence[ImageSource],
        top_k: int = 5,
        batch_size: int = 32,
        threshold: float | None = None,
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
            out.extend(self._answer(p, top_k, each, threshold) for p in probs)
        return out

    def predict_folder(
        self,
        folder: str | os.PathLike,
        csv_path: str | os.PathLike,
        *,
        recurse: bool = True,
        progress: str = "auto",
        batch_size: int = BATCH_SIZE,
        workers: int | None = None,
        threshold: float | None = None,
    ) -> FolderSummary:
        """Predict every image under ``folder`` into a CSV (path, label, probability, accepted,
        error), one row per file in sorted path order, written atomically. ``threshold``: as
        ``predict``.

        A bad file gets a row with its error, never a crash. Files are decoded and run in
        batches of ``batch_size`` by ``workers`` threads (default: cores / ``threads``; see
        export/batch.py). ``progress``: "auto" (a bar on a terminal, plain lines in logs or
        under CI), "bar", "plain" or "silent" (as the Learner)."""
        start = time.perf_counter()
        files = get_image_files(folder, recurse=recurse)
        done = write_csv(
            self, files, csv_path, batch_size=batch_size, workers=workers, progress=progress,
            threshold=threshold,
        )  # fmt: skip
        return FolderSummary(done.images, done.errors, Path(csv_path), time.perf_counter() - start)


def check_threshold(value: object, name: str = "threshold") -> float:
    """A probability threshold: a finite number in [0, 1], else ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(value).__name__}")
    if not 0 <= value <= 1:  # NaN fails this too
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


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

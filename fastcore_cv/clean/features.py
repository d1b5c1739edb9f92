"""Body features of every file, computed once: what the out-of-fold head trains on.

``--model`` is a checkpoint (``model.pt`` + ``model.json``, weights only) or an exported
.onnx file. A checkpoint gives its body directly. An .onnx file exported here ends in
``pool -> Gemm -> Softmax``: the Gemm's input is the body's output, so it is added as a second
graph output and read with onnxruntime (torch-free; the preprocessing comes from the file's
metadata through the Predictor). A graph without that tail (e.g. some int8 files) falls back
to the model's own probabilities as features, which are in-sample for its training files:
``FeatureSource.honest`` says which, and the page and the report say so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastcore_cv.export.errors import ModelFileError
from fastcore_cv.vision.preprocessing import PreprocessConfig, preprocess_batch

BATCH = 64
_TAIL = {"Softmax", "LogSoftmax", "Identity", "Cast"}  # walked past, back from the output


@dataclass
class FeatureSource:
    """A model's classes, preprocessing, and a function paths -> (N, F) float32 features.

    ``kind``: "checkpoint body", "onnx body" or "onnx probabilities"; ``honest``: whether the
    features come from the body (the OOF head then never saw a file's label)."""

    path: Path
    classes: list[str]
    config: PreprocessConfig
    kind: str
    run: object = field(repr=False)  # (N, 3, H, W) float32 -> (N, F)

    @property
    def honest(self) -> bool:
        return self.kind != "onnx probabilities"

    def features(self, paths: list[Path]) -> tuple[np.ndarray, float]:
        """(features (N, F) float32, seconds) for ``paths`` (all decodable), BATCH at a time."""
        start = time.perf_counter()
        out = [
            np.asarray(self.run(preprocess_batch(paths[i : i + BATCH], self.config)), np.float32)
            for i in range(0, len(paths), BATCH)
        ]
        feats = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
        return feats, time.perf_counter() - start


def load_source(path: str | os.PathLike, threads: int = 1) -> FeatureSource:
    """The FeatureSource of a checkpoint (``.pt``) or an exported ``.onnx`` file."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"--model: {path} does not exist")
    if path.suffix == ".onnx":
        return _onnx_source(path, threads)
    return _checkpoint_source(path, threads)


def _checkpoint_source(path: Path, threads: int) -> FeatureSource:
    import torch

    from fastcore_cv.export.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    body = ckpt.model.body.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = body(torch.from_numpy(x))
        return out.reshape(len(x), -1).numpy()

    return FeatureSource(path, list(ckpt.classes), ckpt.preprocess_config, "checkpoint body", run)


def _onnx_source(path: Path, threads: int) -> FeatureSource:
    import onnx
    import onnxruntime as ort

    from fastcore_cv.export.predictor import Predictor, session_options

    predictor = Predictor(path, threads, warmup=0)  # metadata, preprocessing, signature checks
    model = onnx.load(str(path))
    name = _penultimate(model.graph)
    if name is None:
        return FeatureSource(
            path, predictor.classes, predictor.config, "onnx probabilities", predictor.run
        )
    extra = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    model.graph.output.append(extra)
    session = ort.InferenceSession(
        model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
    )
    input_name = predictor.input_name

    def run(x: np.ndarray) -> np.ndarray:
        out = session.run([name], {input_name: x})[0]
        return out.reshape(len(x), -1)

    return FeatureSource(path, predictor.classes, predictor.config, "onnx body", run)


def _penultimate(graph) -> str | None:
    """The input of the last Gemm/MatMul before the output (the pooled body features)."""
    producers = {o: n for n in graph.node for o in n.output}
    if len(graph.output) != 1:
        raise ModelFileError("--model: expected one output (class probabilities or logits)")
    node = producers.get(graph.output[0].name)
    for _ in range(4):
        if node is None:
            return None
        if node.op_type in ("Gemm", "MatMul"):
            return node.input[0]
        if node.op_type == "Add":  # MatMul + bias
            node = next((producers[i] for i in node.input if i in producers), None)
            continue
        if node.op_type not in _TAIL:
            return None
        node = producers.get(node.input[0])
    return None

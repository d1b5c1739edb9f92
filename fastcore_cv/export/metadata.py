"""What an exported model carries besides its graph: classes, preprocessing, provenance.

The keys live in the ONNX file's ``metadata_props`` (string -> string), so the one file is
enough to predict. Reading them needs neither torch nor onnx (onnxruntime exposes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fastcore_cv.export.errors import ModelFileError
from fastcore_cv.vision.preprocessing import PreprocessConfig

FORMAT = "1"
PREFIX = "fastcore_cv."
CLASSES = PREFIX + "classes"  # JSON list of class names, index = output column
PREPROCESS = PREFIX + "preprocess"  # PreprocessConfig.to_json()
VERSION = PREFIX + "version"  # fastcore_cv.__version__ that wrote the file
FORMAT_KEY = PREFIX + "format"  # this metadata layout's version
INPUT = PREFIX + "input"  # the graph input's name
OUTPUT = PREFIX + "output"  # "probabilities" (softmax inside the graph) or "logits"
QUANTIZATION = PREFIX + "quantization"  # absent for fp32; a description for int8
REQUIRED = (FORMAT_KEY, CLASSES, PREPROCESS, VERSION, INPUT, OUTPUT)
OUTPUTS = ("probabilities", "logits")


@dataclass(frozen=True)
class ModelInfo:
    """The metadata of an exported model, parsed and checked."""

    classes: tuple[str, ...]
    preprocess: PreprocessConfig
    version: str
    input_name: str
    output: str
    quantization: str | None = None

    def to_props(self) -> dict[str, str]:
        props = {
            FORMAT_KEY: FORMAT,
            CLASSES: json.dumps(list(self.classes)),
            PREPROCESS: self.preprocess.to_json(),
            VERSION: self.version,
            INPUT: self.input_name,
            OUTPUT: self.output,
        }
        if self.quantization:
            props[QUANTIZATION] = self.quantization
        return props

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (the server's /metadata)."""
        return {
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_dict(),
            "version": self.version,
            "input": self.input_name,
            "output": self.output,
            "quantization": self.quantization,
        }


def check_classes(classes: object) -> tuple[str, ...]:
    """A non-empty sequence of distinct non-empty strings, or ValueError/TypeError naming it."""
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"classes: expected a list of class names, got {type(classes).__name__}")
    out = tuple(classes)  # type: ignore[arg-type]
    if not out or not all(isinstance(c, str) and c for c in out):
        raise ValueError(f"classes: expected non-empty strings, got {list(out)!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"classes: names must be distinct, got {list(out)!r}")
    return out


def parse(props: dict[str, str], path: str | Path) -> ModelInfo:
    """Check and parse ``metadata_props``; ModelFileError says which key is missing or bad."""
    missing = [k for k in REQUIRED if k not in props]
    if missing:
        raise ModelFileError(
            f"model: {path} has no {missing[0]!r} metadata (missing: {', '.join(missing)}); "
            "export the model with fastcore_cv.export.to_onnx so that classes and "
            "preprocessing travel inside the file"
        )
    if props[FORMAT_KEY] != FORMAT:
        raise ModelFileError(
            f"model: {path} has metadata format {props[FORMAT_KEY]!r}; this fastcore_cv "
            f"reads format {FORMAT!r} (upgrade fastcore_cv)"
        )
    try:
        classes = check_classes(json.loads(props[CLASSES]))
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"model: {path} has bad {CLASSES!r} metadata: {e}") from e
    try:
        config = PreprocessConfig.from_json(props[PREPROCESS])
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"model: {path} has bad {PREPROCESS!r} metadata: {e}") from e
    if props[OUTPUT] not in OUTPUTS:
        raise ModelFileError(
            f"model: {path} has bad {OUTPUT!r} metadata {props[OUTPUT]!r}; expected one of "
            f"{list(OUTPUTS)}"
        )
    return ModelInfo(
        classes, config, props[VERSION], props[INPUT], props[OUTPUT], props.get(QUANTIZATION)
    )

"""What an exported model carries besides its graph: classes, preprocessing, provenance.

The keys live in the ONNX file's ``metadata_props`` (string -> string), so the one file is
enough to predict. Reading them needs neither torch nor onnx (onnxruntime exposes them).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
# Optional keys (files written before they existed load without them):
MODEL_ID = PREFIX + "model_id"  # sha256 of the weights, the preprocessing and the classes
CREATED = PREFIX + "created"  # UTC ISO time of the export (or of the quantization)
VERSIONS = PREFIX + "versions"  # JSON {package: version} of the libraries that wrote it
TRAINING = PREFIX + "training"  # JSON summary of the fit (when exported from a Learner)
CALIBRATION = PREFIX + "calibration"  # JSON: temperature, threshold and what they give
QUANTIZATION_REPORT = PREFIX + "quantization_report"  # JSON: calibration set, int8 vs fp32
JSON_KEYS = {VERSIONS: "versions", TRAINING: "training", CALIBRATION: "calibration",
             QUANTIZATION_REPORT: "quantization_report"}  # fmt: skip
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
    model_id: str | None = None
    created: str | None = None
    versions: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    quantization_report: dict[str, Any] | None = None

    @property
    def temperature(self) -> float:
        """The fitted temperature (1.0 when the file has none: outputs as exported)."""
        return float(self.calibration["temperature"]) if self.calibration else 1.0

    @property
    def threshold(self) -> float:
        """The confidence below which an answer is "not sure" (0.0 when the file has none)."""
        return float(self.calibration["threshold"]) if self.calibration else 0.0

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
        for key, value in ((MODEL_ID, self.model_id), (CREATED, self.created)):
            if value:
                props[key] = value
        for key, attr in JSON_KEYS.items():
            if getattr(self, attr) is not None:
                props[key] = json.dumps(_finite(getattr(self, attr)), sort_keys=True)
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
            "model_id": self.model_id,
            "created": self.created,
            **{attr: getattr(self, attr) for attr in JSON_KEYS.values()},
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
    extra = {attr: _json_key(props, key, path) for key, attr in JSON_KEYS.items()}
    _check_calibration(extra["calibration"], path)
    return ModelInfo(
        classes, config, props[VERSION], props[INPUT], props[OUTPUT], props.get(QUANTIZATION),
        props.get(MODEL_ID), props.get(CREATED), **extra,
    )  # fmt: skip


def _json_key(props: dict[str, str], key: str, path: str | Path) -> dict[str, Any] | None:
    """An optional JSON-object key: None when absent, ModelFileError naming it when bad."""
    if key not in props:
        return None
    try:
        value = json.loads(props[key])
    except ValueError as e:
        raise ModelFileError(f"model: {path} has bad {key!r} metadata: {e}") from e
    if not isinstance(value, dict):
        raise ModelFileError(f"model: {path} has bad {key!r} metadata: expected a JSON object")
    return value


def _check_calibration(cal: dict[str, Any] | None, path: str | Path) -> None:
    """The two numbers the Predictor uses: a finite temperature > 0, a threshold in [0, 2)."""
    if cal is None:
        return
    t, th = cal.get("temperature"), cal.get("threshold")
    good_t = _is_number(t) and math.isfinite(t) and t > 0
    if not (good_t and _is_number(th) and 0 <= th < 2):
        raise ModelFileError(
            f"model: {path} has bad {CALIBRATION!r} metadata: expected a finite temperature "
            f"> 0 and a threshold in [0, 1], got temperature {t!r}, threshold {th!r}"
        )


def _finite(x: Any) -> Any:
    """``x`` with NaN and infinities as None: strict JSON (the server's /metadata) has neither."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def model_id(proto: Any, preprocess: PreprocessConfig, classes: Sequence[str]) -> str:
    """sha256 over an ONNX model's weights (its initializers, by name), the preprocessing and
    the classes: the same weights exported again give the same id, other weights another.
    ``proto``: an onnx.ModelProto (only its fields are read: no onnx import here)."""
    h = hashlib.sha256()
    for t in sorted(proto.graph.initializer, key=lambda t: t.name):
        h.update(t.name.encode() + b"\0" + str(t.data_type).encode() + b"\0")
        h.update(",".join(map(str, t.dims)).encode() + b"\0")
        h.update(t.raw_data if t.raw_data else t.SerializeToString())
    h.update(b"preprocess\0" + preprocess.to_json().encode())
    h.update(b"classes\0" + json.dumps(list(classes)).encode())
    return "sha256:" + h.hexdigest()


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second (the ``created`` key)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def library_versions(*names: str) -> dict[str, str]:
    """{package: installed version} for fastcore_cv, onnxruntime, onnx and ``names``."""
    out = {}
    for name in ("fastcore_cv", "onnxruntime", "onnx", *names):
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def training_summary(learn: Any, dls: Any = None) -> dict[str, Any]:
    """What a Learner knows of how its model was made (read, never changed): architecture,
    epochs and the LRs of the recorded fits (fine_tune's frozen stage first), the last
    validation loss and error rate, images per class per split and the split seed."""
    model = learn.model
    body, head = getattr(model, "body", None), getattr(model, "head", None)
    arch = type(model).__name__
    if body is not None and head is not None:
        arch += f" ({type(body).__name__} body + {type(head).__name__} head)"
    stages = []
    frozen = getattr(learn, "frozen_history", None)
    for name, history in (("frozen", frozen), ("fit", learn.recorder.history)):
        if history is None or not history.epochs or (name == "fit" and history is frozen):
            continue
        lrs = [lr for lr in history.batch_lrs if math.isfinite(lr)]
        last = history.epochs[-1]
        stages.append({
            "stage": name,
            "epochs": len(history.epochs),
            "lr_max": max(lrs) if lrs else None,  # the last parameter group's (the head's)
            "lr_final": lrs[-1] if lrs else None,
            "train_loss": last.train_loss,
            "valid_loss": last.valid_loss,
            **{k: v for k, v in last.metrics.items()},
        })  # fmt: skip
    dls = dls if dls is not None else getattr(learn, "source_dls", None) or learn.dls
    counts = getattr(dls, "counts", None)
    final = stages[-1] if stages else {}
    return {
        "architecture": arch,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "epochs": sum(s["epochs"] for s in stages),
        "stages": stages,
        "valid_loss": final.get("valid_loss"),
        "error_rate": final.get("error_rate"),
        "images_per_class": dict(counts) if isinstance(counts, dict) else None,
        "split_seed": getattr(dls, "seed", None),
    }


def describe(info: ModelInfo) -> str:
    """The metadata as readable lines (``fastcore-cv info``)."""
    lines = [
        f"model id      {info.model_id or '- (exported before model ids)'}",
        f"created       {info.created or '-'}",
        f"classes       {len(info.classes)}: {', '.join(info.classes[:10])}"
        + (" ..." if len(info.classes) > 10 else ""),
        f"input         {info.input_name} (N, 3, {info.preprocess.size[0]}, "
        f"{info.preprocess.size[1]}), output {info.output}",
        f"preprocess    {info.preprocess.to_json()}",
        f"written by    fastcore_cv {info.version}"
        + "".join(f", {k} {v}" for k, v in (info.versions or {}).items() if k != "fastcore_cv"),
    ]
    t = info.training
    if t:
        lines.append(f"training      {t.get('architecture')}, {t.get('parameters'):,} parameters, "
                     f"{t.get('epochs')} epochs, split seed {t.get('split_seed')}")  # fmt: skip
        for s in t.get("stages", []):
            lines.append(
                f"  {s['stage']:<11} {s['epochs']} epochs, LR max {_num(s.get('lr_max'))} "
                f"final {_num(s.get('lr_final'))}, valid loss {_num(s.get('valid_loss'))}, "
                f"error rate {_num(s.get('error_rate'))}"
            )
        for split, per in (t.get("images_per_class") or {}).items():
            lines.append(f"  {split:<11} " + ", ".join(f"{c} {n}" for c, n in per.items()))
    else:
        lines.append("training      - (not exported from a Learner)")
    c = info.calibration
    if c:
        lines.append(
            f"calibration   temperature {_num(c['temperature'])}, 'not sure' below "
            f"{c['threshold']:.4f} (target {c.get('target_accuracy', 0):.1%} accuracy)"
        )
        if "coverage" in c:
            lines.append(
                f"  validation  {c.get('valid_images')} images: accepts {c['coverage']:.1%}, "
                f"accuracy on accepted {_pct(c.get('accuracy_accepted'))} (all "
                f"{_pct(c.get('accuracy'))}), ECE {_num(c.get('ece_before'))} -> "
                f"{_num(c.get('ece_after'))}"
            )
    else:
        lines.append("calibration   - (no validation data at export: every answer accepted)")
    if info.quantization:
        lines.append(f"quantization  {info.quantization}")
        q = info.quantization_report or {}
        if q.get("int8_accuracy") is not None:
            lines.append(
                f"  accuracy    int8 {_pct(q['int8_accuracy'])} vs fp32 "
                f"{_pct(q['fp32_accuracy'])} on {q.get('valid_images')} images, top-1 "
                f"agreement {_pct(q.get('agreement'))}"
            )
    return "\n".join(lines)


def _num(x: object) -> str:
    return f"{x:.4g}" if _is_number(x) else "-"


def _pct(x: object) -> str:
    return f"{x:.1%}" if _is_number(x) and math.isfinite(x) else "-"  # type: ignore[arg-type]

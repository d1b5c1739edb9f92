"""Model files that say what they are (export/metadata.py): id, time, versions, training,
calibration and int8 summaries; old files without them still load; `fastcore-cv info`; the
accepted flag ("not sure") in the Predictor and the CLI."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import numpy as np
import onnx
import pytest

from fastcore_cv.cli import main
from fastcore_cv.export import Predictor
from fastcore_cv.export import calibration as cal
from fastcore_cv.export import metadata as meta
from fastcore_cv.export.errors import ModelFileError

NEW_KEYS = (meta.MODEL_ID, meta.CREATED, meta.VERSIONS, meta.TRAINING, meta.CALIBRATION,
            meta.QUANTIZATION_REPORT)  # fmt: skip


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _rewrite(src, dst, props: dict[str, str]):
    model = onnx.load(str(src))
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return dst


def test_an_exported_learner_says_what_it_is(exported):
    info = Predictor(exported.path, warmup=0).info
    assert info.model_id.startswith("sha256:") and len(info.model_id) == 7 + 64
    created = datetime.fromisoformat(info.created)
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created).days < 1
    assert {"fastcore_cv", "onnxruntime", "onnx", "torch"} <= set(info.versions)
    t = info.training
    history = exported.learn.recorder.history
    assert t["epochs"] == 10 == len(history.epochs) and t["split_seed"] == 0
    assert t["architecture"].startswith("SimpleCNN (") and t["parameters"] > 0
    stage = t["stages"][-1]
    assert stage["lr_max"] == pytest.approx(max(history.batch_lrs))
    assert stage["valid_loss"] == pytest.approx(history.epochs[-1].valid_loss)
    assert t["error_rate"] == pytest.approx(history.epochs[-1].metrics.get("error_rate"))
    assert t["images_per_class"] == exported.dls.counts  # {"train": {...}, "valid": {...}}
    c = info.calibration
    assert c["valid_images"] == len(exported.dls.valid_ds) and c["target_accuracy"] == 0.99
    assert info.temperature == c["temperature"] > 0 and info.threshold == c["threshold"]


def test_the_threshold_holds_on_the_predictors_own_numbers(exported):
    """By construction: the export computed the confidences with this Predictor, batches of
    32, so the accepted validation images are right at least the target share of the time."""
    p = Predictor(exported.path, warmup=0)
    files, y = exported.dls.valid_ds.items, np.asarray(exported.dls.valid_ds.labels)
    probs = np.concatenate([b.probabilities[None] for b in p.predict_batch(files, batch_size=32)])
    accepted = probs.max(1) >= p.threshold
    right = probs.argmax(1) == y
    c = p.info.calibration
    assert accepted.mean() == pytest.approx(c["coverage"])
    assert right[accepted].mean() >= c["target_accuracy"]


@pytest.mark.slow  # exports (or quantizes) again
def test_the_id_is_stable_across_exports_and_changes_with_the_weights(exported, tmp_path):
    import torch

    from fastcore_cv.export import to_onnx

    model, dls = exported.learn.model, exported.dls
    kw = {"classes": dls.classes, "preprocess_config": dls.preprocess_config}
    a = to_onnx(model, tmp_path / "a.onnx", **kw).info.model_id
    b = to_onnx(model, tmp_path / "b.onnx", **kw).info.model_id
    assert a == b == exported.report.info.model_id
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    assert to_onnx(changed, tmp_path / "c.onnx", **kw).info.model_id != a


@pytest.mark.slow  # exports (or quantizes) again
def test_int8_records_its_calibration_and_accuracy_vs_fp32(exported, int8):
    info = Predictor(int8.path, warmup=0).info
    q = info.quantization_report
    assert q["calibration_images"] == int8.report.calibration_images
    assert q["fp32_accuracy"] == int8.report.fp32_accuracy
    assert q["int8_accuracy"] == int8.report.int8_accuracy
    assert q["fp32_model_id"] == exported.report.info.model_id != info.model_id
    assert info.calibration["valid_images"] == int8.report.valid_images  # its own T
    assert "int8" in meta.describe(info) and "vs fp32" in meta.describe(info)


def test_files_written_before_these_keys_still_load(exported, tmp_path):
    props = {k: v for k, v in _props(exported.path).items() if k not in NEW_KEYS}
    old = Predictor(_rewrite(exported.path, tmp_path / "old.onnx", props))
    assert old.info.model_id is None and old.info.calibration is None
    assert old.temperature == 1.0 and old.threshold == 0.0
    image = exported.dls.valid_ds.items[0]
    p = old.predict(image)
    assert p.accepted and p.to_dict()["accepted"] is True
    x = np.zeros((1, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(old.run(x), old.raw_outputs(x))  # no T: as exported
    assert "exported before model ids" in meta.describe(old.info)


@pytest.mark.parametrize(("key", "value", "match"), [
    (meta.CALIBRATION, "{not json", "bad 'fastcore_cv.calibration'"),
    (meta.CALIBRATION, '{"temperature": 0, "threshold": 0.5}', "temperature"),
    (meta.CALIBRATION, '{"temperature": 1.0, "threshold": -1}', "threshold"),
    (meta.TRAINING, "[1, 2]", "expected a JSON object"),
])  # fmt: skip
def test_bad_new_keys_are_named(exported, tmp_path, key, value, match):
    props = {**_props(exported.path), key: value}
    with pytest.raises(ModelFileError, match=match):
        Predictor(_rewrite(exported.path, tmp_path / "bad.onnx", props), warmup=0)


def test_the_predictor_scales_by_the_files_temperature(exported, tmp_path):
    props = _props(exported.path)
    props[meta.CALIBRATION] = json.dumps({"temperature": 2.5, "threshold": 0.9})
    p = Predictor(_rewrite(exported.path, tmp_path / "t.onnx", props), warmup=0)
    x = np.random.default_rng(0).normal(0, 1, (4, 3, 32, 32)).astype(np.float32)
    raw = p.raw_outputs(x).astype(np.float64)  # probabilities (softmax in the graph)
    z = np.log(raw) / 2.5
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(p.run(x), want, atol=8 * np.finfo(np.float32).eps)
    image = exported.dls.valid_ds.items[0]
    best = p.predict(image)
    assert best.accepted == (best.probability >= 0.9) and best.threshold == 0.9
    assert p.predict(image, threshold=1.0).accepted is (best.probability >= 1.0)
    assert p.predict(image, threshold=0.0).accepted is True
    assert p.predict(image, threshold=1.0).label == best.label  # the label stays
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            p.predict(image, threshold=bad)


def test_info_command_and_not_sure_in_predict(exported, capsys):
    assert main(["info", str(exported.path)]) == 0
    out = capsys.readouterr().out
    assert exported.report.info.model_id in out and "epochs" in out and "temperature" in out
    assert main(["info", str(exported.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == exported.report.info.model_id
    image = str(exported.dls.valid_ds.items[0])
    assert main(["predict", str(exported.path), image, "--threshold", "1"]) == 0
    assert "not sure" in capsys.readouterr().out
    assert main(["predict", str(exported.path), image, "--threshold", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["accepted"] is False and row["threshold"] == 1.0 and row["label"]
    assert main(["predict", str(exported.path), image, "--threshold", "1e-9"]) == 0
    assert "not sure" not in capsys.readouterr().out
    assert main(["info", str(exported.path.with_name("missing.onnx"))]) != 0


def test_calibration_summary_in_the_export_report(exported):
    text = str(exported.report)
    assert "model id sha256:" in text and "calibrated: temperature" in text
    assert cal.describe(exported.report.calibration) in text

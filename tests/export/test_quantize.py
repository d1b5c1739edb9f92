"""quantize: static per-channel QDQ int8, metadata carried over, fp32 vs int8 accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastcore_cv.export import ModelFileError, Predictor, quantization, quantize
from fastcore_cv.export import metadata as meta


def test_report_and_accuracy_on_the_labelled_folder(int8, exported):
    r = int8.report
    assert r.path == int8.path and int8.path.is_file()
    assert r.calibration_images == 30 and r.valid_images == 30 and r.skipped == 0
    # The CNN learnt its photos; int8 must keep what fp32 gets right (within one image).
    assert r.fp32_accuracy >= 0.8
    assert r.int8_accuracy >= r.fp32_accuracy - 1 / 30
    assert r.agreement >= 0.9
    assert "per-channel" in r.description and "U8S8" in r.description
    assert "fp32" in str(r) and "int8" in str(r)


def test_graph_is_static_qdq_per_channel_with_float_softmax(int8):
    model = onnx.load(str(int8.path))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_scales = [
        inits[n.input[1]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    ]
    assert weight_scales and all(s.size > 1 for s in weight_scales)  # one scale per channel
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert softmax.output[0] == model.graph.output[0].name  # float probabilities out
    assert not [n for n in model.graph.node if softmax.output[0] in n.input]


def test_metadata_carried_over_and_predictor_loads_it(int8, exported):
    fp32 = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    q = {p.key: p.value for p in onnx.load(str(int8.path)).metadata_props}
    assert q[meta.QUANTIZATION] == int8.report.description
    # its own: id (other weights), time, calibration (its own outputs) and int8 report
    own = {meta.QUANTIZATION, meta.MODEL_ID, meta.CREATED, meta.CALIBRATION,
           meta.QUANTIZATION_REPORT}  # fmt: skip
    assert {k: v for k, v in q.items() if k not in own} == {
        k: v for k, v in fp32.items() if k not in own
    }
    predictor = Predictor(int8.path)
    assert predictor.classes == exported.dls.classes
    assert "int8 static QDQ" in repr(predictor)
    files = exported.dls.valid_ds.items
    a = np.stack([predictor.predict(f).probabilities for f in files])
    b = np.stack([Predictor(exported.path).predict(f).probabilities for f in files])
    assert np.abs(a - b).max() < 0.2  # int8 is close to fp32, not equal
    assert np.allclose(a.sum(1), 1, atol=1e-5)  # the softmax stayed in float


def test_calibration_from_a_list_or_the_dataloaders(exported, tmp_path):
    files = exported.dls.train_ds.items[:5]
    r = quantize(exported.path, tmp_path / "a.onnx", files)
    assert r.calibration_images == 5 and r.valid_images == 0 and r.agreement is not None
    r = quantize(exported.path, tmp_path / "b.onnx", exported.dls, valid=exported.dls,
                 max_calibration=4)  # fmt: skip
    assert r.calibration_images == 4 and r.valid_images == len(exported.dls.valid_ds)


def test_warns_when_int8_loses_more_than_one_point(exported, tmp_path, monkeypatch):
    real = quantization._top1

    def worse(predictor, arrays):  # the int8 model gets every other image wrong
        top = real(predictor, arrays)
        if predictor.info.quantization:
            top[::2] = (top[::2] + 1) % 3
        return top

    monkeypatch.setattr(quantization, "_top1", worse)
    with pytest.warns(UserWarning, match="points below fp32"):
        quantize(exported.path, tmp_path / "q.onnx", exported.dls.train_ds.items[:4],
                 valid=exported.dls)  # fmt: skip


def test_bad_images_are_skipped_with_one_warning(exported, tmp_path):
    files = [*exported.dls.train_ds.items[:3], tmp_path / "missing.jpg"]
    with pytest.warns(UserWarning, match="calibration: skipped 1 bad image"):
        r = quantize(exported.path, tmp_path / "q.onnx", files)
    assert r.calibration_images == 3 and r.skipped == 1


def test_errors(exported, int8, tmp_path):
    with pytest.raises(ModelFileError, match="already quantized"):
        quantize(int8.path, tmp_path / "q.onnx", exported.dls)
    with pytest.raises(ValueError, match="activations"):
        quantize(exported.path, tmp_path / "q.onnx", exported.dls, activations="int4")
    with pytest.raises(ValueError, match="method"):
        quantize(exported.path, tmp_path / "q.onnx", exported.dls, method="magic")
    with pytest.raises(TypeError, match="calibration"):
        quantize(exported.path, tmp_path / "q.onnx", 42)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="calibration: no readable"):
        quantize(exported.path, tmp_path / "q.onnx", [tmp_path / "missing.jpg"])
    with pytest.raises(ModelFileError, match="does not exist"):
        quantize(tmp_path / "nope.onnx", tmp_path / "q.onnx", exported.dls)
    assert not (tmp_path / "q.onnx").exists()


def test_an_unwritable_int8_path_is_refused_before_calibrating(exported, tmp_path):
    regular = tmp_path / "a_file"
    regular.write_text("x")
    with pytest.raises(ValueError, match=f"^int8_path: cannot create {regular}: .*not a folder"):
        quantize(exported.path, regular / "q.onnx", 42)  # 42: the calibration is never reached
    with pytest.raises(ValueError, match="^int8_path: .* is a folder"):
        quantize(exported.path, tmp_path, exported.dls)


def test_spatial_mean_becomes_a_global_average_pool(exported, int8):
    fp32 = onnx.load(str(exported.path))
    assert "ReduceMean" in [n.op_type for n in fp32.graph.node]
    pooled = quantization.global_average_pools(fp32)
    onnx.checker.check_model(pooled, full_check=True)
    ops = [n.op_type for n in pooled.graph.node]
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops and "Flatten" in ops
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    a, b = (
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"image": x}
        )[0]
        for m in (fp32, pooled)
    )
    assert np.abs(a - b).max() < 1e-6  # the same function
    q_ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert "GlobalAveragePool" in q_ops and "ReduceMean" not in q_ops


@pytest.mark.parametrize(
    "axes, keepdims, expected",
    [([2, 3], 1, ["GlobalAveragePool"]), ([-1, -2], 0, ["GlobalAveragePool", "Flatten"]),
     ([1], 1, ["ReduceMean"]), ([1, 2, 3], 0, ["ReduceMean"])],
)  # fmt: skip
def test_global_average_pools_only_rewrites_a_spatial_mean(axes, keepdims, expected):
    shape = [2, 4, 5, 5]
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], "mean", keepdims=keepdims)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    pooled = quantization.global_average_pools(model)
    assert [n.op_type for n in pooled.graph.node] == expected
    assert [n.op_type for n in model.graph.node] == ["ReduceMean"]  # the input is not changed
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a, b = (
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]
        for m in (model, pooled)
    )
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-6

"""to_onnx / export_learner: one checked file, metadata, dynamic batch, parity, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import fastcore_cv
from fastcore_cv.export import (
    ExportError,
    Predictor,
    load_checkpoint,
    onnx_export,
    save_checkpoint,
    to_onnx,
)
from fastcore_cv.export import metadata as meta
from fastcore_cv.vision.models import BodyHead, simple_cnn
from fastcore_cv.vision.preprocessing import PreprocessConfig, preprocess_batch
from fastcore_cv.vision.transfer import make_head

CONFIG = PreprocessConfig(size=32)


def test_report_and_single_file(exported):
    r = exported.report
    assert r.parity_max_abs_diff <= 1e-4 and r.parity_inputs.endswith("images")
    assert r.top1_agreement == 1.0
    assert r.output == "probabilities" and r.classes == tuple(exported.dls.classes)
    names = sorted(p.name for p in exported.path.parent.iterdir())
    assert [n for n in names if n.startswith("model.onnx")] == ["model.onnx"]  # no .data
    assert r.size_bytes == exported.path.stat().st_size
    assert str(exported.path) in str(r) and "parity" in str(r)


def test_file_passes_full_check_and_carries_metadata(exported):
    proto = onnx.load(str(exported.path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[meta.CLASSES]) == exported.dls.classes
    assert PreprocessConfig.from_json(props[meta.PREPROCESS]) == exported.dls.preprocess_config
    assert props[meta.VERSION] == fastcore_cv.__version__
    assert props[meta.INPUT] == "image" and props[meta.OUTPUT] == "probabilities"
    assert meta.QUANTIZATION not in props


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_dynamic_batch_gives_probabilities(exported, batch):
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    (p,) = session.run(None, {"image": x})
    assert p.shape == (batch, len(exported.dls.classes))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(exported.learn.model.eval()(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(p, ref, atol=1e-5)


def test_learner_and_predictor_agree_on_the_same_files(exported):
    """The guarantee of the one preprocessing: the Learner's validation probabilities and the
    Predictor's (from the image files, torch-free) are the same numbers."""
    probs, _ = exported.learn.get_preds("valid")
    predictor = Predictor(exported.path)
    files = exported.dls.valid_ds.items
    got = np.stack([predictor.predict(f).probabilities for f in files])
    assert len(files) >= 6
    # The file carries the temperature fitted at export: softmax(log p / T) of the Learner's.
    z = np.log(probs.numpy().astype(np.float64)) / predictor.temperature
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-4 / min(1.0, predictor.temperature), rtol=0)
    batch = predictor.predict_batch(files, batch_size=4)
    np.testing.assert_allclose(np.stack([b.probabilities for b in batch]), got, atol=1e-6)


def test_failed_parity_writes_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the previous model")
    monkeypatch.setattr(onnx_export, "_parity", lambda *a: (0.5, 0.0))
    with pytest.raises(ExportError, match="disagree.*5.00e-01.*not written"):
        to_onnx(simple_cnn(2, (4,)), target, classes=["a", "b"], preprocess_config=CONFIG)
    assert target.read_bytes() == b"the previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left behind


def test_an_unwritable_path_is_refused_before_the_export(tmp_path):
    """A folder (or a path under a file) is named before seconds of torch.export, not after."""
    regular = tmp_path / "a_file"
    regular.write_text("x")
    for path, why in ((tmp_path, "is a folder"), (regular / "m.onnx", "is not a folder")):
        with pytest.raises(ValueError, match=f"^path: .*{why}"):
            to_onnx(DataDependentIf(), path, classes=["a", "b"], preprocess_config=CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


class DataDependentIf(nn.Module):
    """Python `if` on a tensor value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x.mean(dim=(2, 3)))
        return out if out.sum() > 0 else -out


def test_unexportable_model_raises_export_error_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="torch.onnx.export failed"):
        to_onnx(
            DataDependentIf(), tmp_path / "m.onnx", classes=["a", "b"], preprocess_config=CONFIG
        )
    assert list(tmp_path.iterdir()) == []


def test_kernel_layers_fastai_head_logits_and_checkpoint_round_trip(tmp_path, photos):
    """A vision_learner-style model (kernel-backed LinearReLU head) goes through a weights-only
    checkpoint, then exports as logits: the Predictor applies the softmax itself."""
    torch.manual_seed(1)
    body = simple_cnn(3).body  # the default channels: what arch="simple_cnn" rebuilds
    model = BodyHead(body, make_head(64, 3, "fastai"), 64).eval()
    for bn in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    classes = ["astronaut", "cat", "coffee"]
    ckpt_path = save_checkpoint(model, tmp_path / "m.pt", arch="simple_cnn", classes=classes,
                                preprocess_config=CONFIG)  # fmt: skip
    side = json.loads(ckpt_path.with_suffix(".json").read_text())
    assert side["head"] == "fastai" and side["classes"] == classes
    ckpt = load_checkpoint(ckpt_path)
    files = sorted(photos.rglob("*.jpg"))[:5]
    x = torch.from_numpy(preprocess_batch(files, CONFIG))
    with torch.no_grad():
        ref = torch.softmax(model(x), 1).numpy()
        np.testing.assert_allclose(torch.softmax(ckpt.model(x), 1).numpy(), ref, atol=1e-6)
    report = to_onnx(ckpt.model, tmp_path / "m.onnx", classes=ckpt.classes,
                     preprocess_config=ckpt.preprocess_config, verify_images=files,
                     softmax=False)  # fmt: skip
    assert report.output == "logits" and report.parity_max_abs_diff <= 1e-4
    got = Predictor(tmp_path / "m.onnx").predict_batch(files)
    np.testing.assert_allclose(np.stack([p.probabilities for p in got]), ref, atol=1e-4)


def test_checkpoint_refuses_a_model_it_cannot_rebuild(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        save_checkpoint(simple_cnn(2, (4,)), tmp_path / "m.pt", arch="simple_cnn",
                        classes=["a", "b"], preprocess_config=CONFIG)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_refuses_a_pickle(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(simple_cnn(2), path, arch="simple_cnn", classes=["a", "b"],
                    preprocess_config=CONFIG)  # fmt: skip
    torch.save({"weights": object()}, path)  # an arbitrary pickled object
    with pytest.raises(ValueError, match="not a weights-only state_dict") as e:
        load_checkpoint(path)
    message = str(e.value)  # one line naming the file, not torch's advice on loading it anyway
    assert "\n" not in message and str(path) in message and "never loads pickled" in message
    assert "weights_only" not in message


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"classes": ["a", "b", "c"]}, ValueError, "classes"),
        ({"classes": ["a", "a"]}, ValueError, "classes"),
        ({"classes": "ab"}, TypeError, "classes"),
        ({"preprocess_config": {"size": 32}}, TypeError, "preprocess_config"),
        ({"example_input": torch.zeros(2, 3, 16, 16)}, ValueError, "example_input"),
        ({"example_input": torch.zeros(1, 3, 32, 32)}, ValueError, "example_input"),
        ({"example_input": np.zeros((2, 3, 32, 32), np.float32)}, TypeError, "example_input"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, error, match):
    args = {"classes": ["a", "b"], "preprocess_config": CONFIG, **kwargs}
    with pytest.raises(error, match=match):
        to_onnx(simple_cnn(2, (4,)), tmp_path / "m.onnx", **args)
    assert list(tmp_path.iterdir()) == []


def test_model_must_be_a_module(tmp_path):
    with pytest.raises(TypeError, match="model"):
        to_onnx(lambda x: x, tmp_path / "m.onnx", classes=["a"], preprocess_config=CONFIG)

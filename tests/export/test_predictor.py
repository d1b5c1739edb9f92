"""Predictor: torch-free, every input kind, clear errors for bad models and bad images."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from fastcore_cv.export import ModelFileError, Predictor
from fastcore_cv.export import metadata as meta
from fastcore_cv.vision.decode import ImageError


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported.path)


@pytest.fixture(scope="module")
def photo(exported):
    return exported.dls.valid_ds.items[0]


def test_importing_the_predictor_and_server_never_imports_torch():
    code = (
        "import sys\n"
        "import fastcore_cv.export.predictor, fastcore_cv.export.quantization\n"
        "from fastcore_cv.export import Predictor, quantize, ModelFileError\n"
        "import fastcore_cv.serve.app, fastcore_cv.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_input_kind_gives_the_same_answer(predictor, photos):
    png = sorted(photos.rglob("*.png"))[0]
    raw = png.read_bytes()
    img = Image.open(png)
    img.load()
    inputs = [png, str(png), raw, bytearray(raw), io.BytesIO(raw), img, np.asarray(img)]
    answers = [predictor.predict(x) for x in inputs]
    for a in answers[1:]:
        np.testing.assert_array_equal(a.probabilities, answers[0].probabilities)
    # A JPEG given encoded may decode at a reduced scale (draft mode, as in training), so
    # its decoded pixels are compared only among encoded forms.
    jpg = sorted(photos.rglob("*.jpg"))[0]
    encoded = [jpg, jpg.read_bytes(), io.BytesIO(jpg.read_bytes())]
    first, *rest = [predictor.predict(x).probabilities for x in encoded]
    for r in rest:
        np.testing.assert_array_equal(r, first)


def test_prediction_fields(predictor, photo):
    p = predictor.predict(photo, top_k=2)
    probs = p.probabilities
    assert probs.shape == (3,) and abs(probs.sum() - 1) < 1e-5
    assert p.index == int(probs.argmax()) and p.label == predictor.classes[p.index]
    assert p.probability == pytest.approx(float(probs.max()))
    assert [c for c, _ in p.top_k] == [predictor.classes[i] for i in np.argsort(-probs)[:2]]
    assert p.latency_ms > 0
    assert len(predictor.predict(photo, top_k=50).top_k) == 3  # capped at the class count
    d = p.to_dict()
    assert d["top_k"][0] == {"label": p.label, "probability": p.probability}
    assert set(d) == {"label", "index", "probability", "top_k", "latency_ms", "accepted",
                      "threshold"}  # fmt: skip


def test_session_is_tuned_for_single_images(predictor):
    assert predictor.session.get_providers() == ["CPUExecutionProvider"]
    opts = predictor.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert "size (32, 32)" in repr(predictor)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "zero bytes"),
        (b"plain text, not a photo", "not an image"),
        ("truncated", "truncated"),
        ("huge", "decompression bomb"),
    ],
)
def test_bad_images_raise_image_error_and_the_session_stays_usable(
    predictor, photo, tmp_path, imaging, content, reason
):
    if content == "truncated":
        full = imaging.jpeg_bytes(np.full((64, 64, 3), 120, np.uint8))
        content = full[: len(full) // 2]
    elif content == "huge":
        content = imaging.jpeg_bytes(np.zeros((8, 8, 3), np.uint8))
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    small = Predictor(predictor.path, max_pixels=10) if reason.startswith("decomp") else predictor
    with pytest.raises(ImageError, match=reason) as info:
        small.predict(path)
    assert str(path) in str(info.value)  # the error names the input
    before = predictor.predict(photo).probabilities
    with pytest.raises(ImageError):
        small.predict_batch([photo, path])
    np.testing.assert_array_equal(predictor.predict(photo).probabilities, before)


def test_the_default_pixel_limit_is_the_one_in_decode(predictor, tmp_path):
    from fastcore_cv.vision.decode import MAX_PIXELS

    assert predictor.max_pixels == MAX_PIXELS == 50_000_000
    # A real 1-bit PNG of 10000 x 5001 (50,010,000 pixels, one row over the limit): refused
    # from its header by the default Predictor, the limit quoted.
    big = tmp_path / "over_the_limit.png"
    Image.new("1", (10_000, 5_001)).save(big)
    with pytest.raises(ImageError, match="50,010,000 pixels > max_pixels=50,000,000"):
        predictor.predict(big)


def test_predict_folder_writes_csv_with_error_rows(predictor, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(photos.rglob("*.jpg"))[:4]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    summary = predictor.predict_folder(folder, tmp_path / "out" / "preds.csv", progress="plain")
    assert (summary.images, summary.errors) == (5, 1)
    with open(summary.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in sorted(folder.glob("*.jpg"))]
    bad = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert bad[0]["label"] == "" and bad[0]["error"].startswith("not an image")
    for r in rows:
        if r is bad[0]:
            continue
        assert r["label"] in predictor.classes and 0 < float(r["probability"]) <= 1
        assert r["error"] == ""
        assert r["label"] == predictor.predict(r["path"]).label
    assert "predict: 5/5 images" in capsys.readouterr().err
    with pytest.raises(ValueError, match="progress"):
        predictor.predict_folder(folder, tmp_path / "x.csv", progress="loud")


# -- bad model files ---------------------------------------------------------------------


def _tiny_graph(path, input_shape, props=None):
    """A one-node ONNX file (Identity -> Softmax) written with onnx.helper: no torch."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)
    node = helper.make_node("Softmax", ["image"], ["probabilities"], axis=1)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]))
    for k, v in (props or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def test_missing_empty_folder_and_non_onnx_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        Predictor(tmp_path / "nope.onnx")
    with pytest.raises(ModelFileError, match="is a folder"):
        Predictor(tmp_path)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        Predictor(tmp_path / "empty.onnx")
    (tmp_path / "text.onnx").write_text("definitely not protobuf " * 10)
    with pytest.raises(ModelFileError, match="not a loadable ONNX file"):
        Predictor(tmp_path / "text.onnx")


def test_onnx_without_our_metadata_names_the_missing_key(tmp_path, exported):
    with pytest.raises(ModelFileError, match=r"no 'fastcore_cv\.format' metadata"):
        Predictor(_tiny_graph(tmp_path / "plain.onnx", ["N", 3, 32, 32]))
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    del props[meta.PREPROCESS]
    with pytest.raises(ModelFileError, match=r"no 'fastcore_cv\.preprocess' metadata"):
        Predictor(_tiny_graph(tmp_path / "nopre.onnx", ["N", 3, 32, 32], props))
    props[meta.PREPROCESS] = '{"size": 32, "colour": "blue"}'
    with pytest.raises(ModelFileError, match="bad 'fastcore_cv.preprocess'"):
        Predictor(_tiny_graph(tmp_path / "badpre.onnx", ["N", 3, 32, 32], props))


def test_wrong_input_rank_or_size(tmp_path, exported):
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    with pytest.raises(ModelFileError, match="rank 2"):
        Predictor(_tiny_graph(tmp_path / "rank2.onnx", ["N", 3], props))
    with pytest.raises(ModelFileError, match="does not match the preprocessing"):
        Predictor(_tiny_graph(tmp_path / "size.onnx", ["N", 3, 64, 64], props))
    with pytest.raises(ModelFileError, match=r"expected one \(N, 3\) output"):
        Predictor(_tiny_graph(tmp_path / "out4.onnx", ["N", 3, 32, 32], props))  # (N, 3, 32, 32)


@pytest.mark.parametrize(("kwargs", "match"), [({"threads": 0}, "threads"),
                                               ({"max_pixels": 0}, "max_pixels")])  # fmt: skip
def test_bad_arguments(exported, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Predictor(exported.path, **kwargs)

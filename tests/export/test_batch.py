"""Batch scoring (export/batch.py): the same answers as one image at a time, one row per file
in sorted order with its error, files read lazily, memory that does not grow with the folder."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastcore_cv.export.batch import BATCH_SIZE, WINDOW, score_files
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.vision.decode import ImageError
from fastcore_cv.vision.files import get_image_files

EPS32 = float(np.finfo(np.float32).eps)


def add_bad_files(folder: Path) -> dict[str, str]:
    """A truncated JPEG, text named .jpg and a zero-byte PNG among the photos: name -> class."""
    good = next(folder.rglob("*.jpg")).read_bytes()
    bad = {
        "cat/half.jpg": good[: len(good) // 3],
        "coffee/notes.jpg": b"not an image, a shopping list\n",
        "astronaut/empty.png": b"",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return bad


@pytest.fixture(scope="module")
def messy(photos, tmp_path_factory) -> Path:
    """The photo crops plus three files that cannot be decoded."""
    folder = tmp_path_factory.mktemp("messy") / "photos"
    shutil.copytree(photos, folder)
    add_bad_files(folder)
    return folder


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported.path)


def one_at_a_time(predictor: Predictor, files: list[Path]) -> list[tuple[dict | None, str]]:
    """Today's loop: ``predict`` per file, the reason of the ImageError when it fails."""
    out = []
    for f in files:
        try:
            p = predictor.predict(f, top_k=3)
            out.append((p.to_dict() | {"probabilities": p.probabilities}, ""))
        except ImageError as e:
            out.append((None, e.reason))
    return out


@pytest.mark.parametrize(("batch_size", "workers"), [(4, 2), (1, 1), (64, 3)])
def test_batches_give_the_answers_of_one_image_at_a_time(predictor, messy, batch_size, workers):
    files = get_image_files(messy)
    want = one_at_a_time(predictor, files)
    got = list(score_files(predictor, files, batch_size=batch_size, workers=workers, top_k=3))
    assert [s.path for s in got] == files  # one per file, in the order given
    for s, (ref, reason) in zip(got, want, strict=True):
        if ref is None:
            assert s.prediction is None and s.error.reason == reason, s.path
            continue
        assert s.error is None, s.path
        p = s.prediction.to_dict()
        for key in set(ref) - {"latency_ms", "probability", "top_k", "probabilities"}:
            assert p[key] == ref[key], (s.path, key)  # label, index (and any flag added later)
        # probabilities sum to 1: a batch may round differently, by a few float32 eps
        np.testing.assert_allclose(s.prediction.probabilities, ref["probabilities"],
                                   rtol=0, atol=64 * EPS32)  # fmt: skip
        assert [t["label"] for t in p["top_k"]] == [t["label"] for t in ref["top_k"]]
    assert sum(s.error is not None for s in got) == 3


def test_folder_csv_has_one_row_per_file_in_sorted_order_with_errors(predictor, messy, tmp_path):
    out = tmp_path / "scores.csv"
    summary = predictor.predict_folder(messy, out, progress="silent", batch_size=4, workers=2)
    rows = list(csv.DictReader(out.open()))
    files = get_image_files(messy)
    assert [r["path"] for r in rows] == [str(f) for f in files] == sorted(r["path"] for r in rows)
    assert (summary.images, summary.errors) == (len(files), 3)
    want = dict(zip(map(str, files), one_at_a_time(predictor, files), strict=True))
    for r in rows:
        ref, reason = want[r["path"]]
        if ref is None:
            assert r["label"] == r["probability"] == r["accepted"] == ""
            assert r["error"].startswith(reason)
        else:
            assert r["error"] == "" and r["label"] == ref["label"]
            assert r["accepted"] == str(int(ref["accepted"]))
            assert abs(float(r["probability"]) - ref["probability"]) <= 64 * EPS32 + 1e-6


def test_files_are_read_lazily_a_bounded_window_ahead(predictor, photos):
    files = get_image_files(photos)
    taken = []

    def listing():
        for f in itertools.cycle(files):  # endless: only a lazy reader can finish
            taken.append(f)
            yield f

    batch, workers = 2, 2
    scored = score_files(predictor, listing(), batch_size=batch, workers=workers)
    first = [s.path for s in itertools.islice(scored, 25)]
    scored.close()
    assert first == list(itertools.islice(itertools.cycle(files), 25))
    # 25 answers out, and at most the window of batches (+ the one being filled) beyond them
    assert len(taken) <= 25 + batch * (WINDOW * workers + 1)


def test_a_session_error_is_raised_not_swallowed(predictor, photos):
    wrong = Predictor.__new__(Predictor)  # the same file, its preprocessing at the wrong size
    wrong.__dict__.update(vars(predictor))
    wrong.config = type(predictor.config)(size=predictor.config.size[0] + 8)
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):
        list(score_files(wrong, get_image_files(photos), batch_size=4, workers=2))


PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fastcore_cv.export.predictor import Predictor

    def peak():  # VmHWM: the peak resident memory since the last reset
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(x.split()[1]) * 1024 for x in status if x.startswith("VmHWM:"))

    predictor = Predictor(sys.argv[1])
    rss = next(int(x.split()[1]) * 1024 for x in Path("/proc/self/status").read_text()
               .splitlines() if x.startswith("VmRSS:"))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the memory now
    summary = predictor.predict_folder(sys.argv[2], sys.argv[3], progress="silent",
                                       batch_size=int(sys.argv[4]))
    print(json.dumps({"rows": summary.images, "growth": peak() - rss}))
""")


def peak_growth(model: Path, folder: Path, out: Path, batch_size: int = BATCH_SIZE) -> dict:
    """Rows written and peak RSS growth while ``predict_folder`` scores ``folder`` (a child
    process, so no other test's memory counts)."""
    run = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(model), str(folder), str(out), str(batch_size)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model224(tmp_path_factory) -> Path:
    """A small exported model at 224 px: one image's input is 0.6 MB, so a folder held in
    memory would show (1000 images = 600 MB)."""
    import torch

    from fastcore_cv.export import to_onnx
    from fastcore_cv.vision.preprocessing import PreprocessConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 2),
    ).eval()  # fmt: skip
    path = tmp_path_factory.mktemp("m224") / "m224.onnx"
    to_onnx(model, path, classes=["a", "b"], preprocess_config=PreprocessConfig(224))
    return path


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_folder(model224, tmp_path):
    """Peak RSS growth while scoring 100 vs 1000 images (a child process each)."""
    rng = np.random.default_rng(0)
    growth = {}
    for n in (100, 1000):
        folder = tmp_path / f"f{n}"
        folder.mkdir()
        for i in range(n):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=80)
        result = peak_growth(model224, folder, tmp_path / "o.csv")
        assert result["rows"] == n
        growth[n] = result["growth"]
    # 900 more images held at once would be 540 MB more; the window is ~20 MB whatever the size
    assert growth[1000] - growth[100] < 40e6, growth
    assert growth[1000] < 120e6, growth

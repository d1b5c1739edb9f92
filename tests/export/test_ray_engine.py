"""Batch scoring on Ray (export/ray_engine.py, export/shards.py): the local engine's answers on
the same 500 files, one row per file with its error, resumable with every row exactly once,
bad input refused before any work. One local Ray (2 CPUs, 127.0.0.1) serves the module."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from fastcore_cv.export.batch import CSV_HEADER, write_csv  # noqa: E402
from fastcore_cv.export.predictor import Predictor  # noqa: E402
from fastcore_cv.export.ray_engine import score_to_shards_ray  # noqa: E402
from fastcore_cv.export.shards import (  # noqa: E402
    list_sources,
    plan_shards,
    read_shards,
    score_to_shards,
)

pytestmark = pytest.mark.slow
N_FILES = 500
BAD = {"x/half.jpg", "x/notes.png", "x/empty.jpg"}  # truncated JPEG, text, zero bytes


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs on the loopback, for the whole module, stopped at the end."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def many(photos, tmp_path_factory) -> Path:
    """500 real image files on disk (JPEG and PNG re-encodings of the fixture crops, resized
    and mirrored so they differ), 3 of them unreadable."""
    folder = tmp_path_factory.mktemp("many")
    crops = sorted(photos.rglob("*.*"))
    rng = np.random.default_rng(0)
    for i in range(N_FILES - len(BAD)):
        img = Image.open(crops[i % len(crops)]).convert("RGB")
        img = img.resize((int(rng.integers(40, 90)), int(rng.integers(40, 90))))
        if i % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        sub = folder / f"d{i % 7}"
        sub.mkdir(exist_ok=True)
        img.save(sub / (f"{i:04d}.png" if i % 5 == 0 else f"{i:04d}.jpg"), quality=85)
    (folder / "x").mkdir()
    good = next(folder.rglob("*.jpg")).read_bytes()
    (folder / "x/half.jpg").write_bytes(good[: len(good) // 3])
    (folder / "x/notes.png").write_bytes(b"not an image\n")
    (folder / "x/empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def local_csv(exported, many, tmp_path_factory) -> list[dict]:
    """The local engine's CSV (export/batch.py write_csv) for the 500 files, as rows."""
    out = tmp_path_factory.mktemp("local") / "local.csv"
    write_csv(Predictor(exported.path), [Path(s) for s in list_sources(many)], out,
              progress="silent")  # fmt: skip
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def test_ray_gives_the_local_engines_rows_exactly(ray_local, exported, many, local_csv, tmp_path):
    """Same rows, cell for cell: the actors run export/batch.py's score_files on the very
    batches the local engine forms, so the float32 probabilities are bit-identical."""
    plan = plan_shards(list_sources(many), tmp_path / "out", model=exported.path, shard_size=64)
    summary = score_to_shards_ray(exported.path, plan, actors=2)
    assert (summary.files, summary.shards, summary.written, summary.skipped) == (500, 8, 8, 0)
    assert summary.errors == len(BAD)
    rows = read_shards(tmp_path / "out")
    assert len(rows) == N_FILES and list(rows[0]) == CSV_HEADER
    assert rows == local_csv  # every cell: label, probability to 6 digits, accepted, error
    errors = {str(Path(r["path"]).relative_to(many)): r["error"] for r in rows if r["error"]}
    assert set(errors) == BAD and all(r["label"] == "" for r in rows if r["error"])
    assert all(e.startswith(("truncated", "zero bytes", "not an image"))
               for e in errors.values()), errors  # fmt: skip


def test_parquet_probabilities_equal_the_predictors_floats(ray_local, exported, many, tmp_path):
    """Parquet keeps the float: equal to the local engine's, exactly, file by file."""
    from fastcore_cv.export.batch import score_files

    sources = list_sources(many)[:120]
    plan = plan_shards(sources, tmp_path / "pq", model=exported.path, shard_size=50,
                       fmt="parquet")  # fmt: skip
    score_to_shards_ray(exported.path, plan)
    rows = read_shards(tmp_path / "pq")
    local = list(score_files(Predictor(exported.path), sources))
    assert [r["path"] for r in rows] == sources
    for r, s in zip(rows, local, strict=True):
        if s.prediction is None:
            assert r["label"] is None and r["probability"] is None and r["error"]
        else:
            assert (r["label"], r["accepted"]) == (s.prediction.label, s.prediction.accepted)
            assert r["probability"] == s.prediction.probability  # bit-identical float32


def test_a_limited_run_resumed_writes_every_row_once(ray_local, exported, many, tmp_path):
    sources = list_sources(many)
    out = tmp_path / "out"
    plan = plan_shards(sources, out, model=exported.path, shard_size=100)
    first = score_to_shards_ray(exported.path, plan, max_shards=2)
    assert first.written == 2 and len(plan.pending()) == 3
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    plan = plan_shards(sources, out, model=exported.path, shard_size=100)  # the re-run
    second = score_to_shards(Predictor(exported.path), plan)  # the local engine finishes it
    assert (second.written, second.skipped) == (3, 2)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if p.name in kept} == kept
    assert [r["path"] for r in read_shards(out)] == sources  # each exactly once, in order


def test_the_local_engine_writes_the_same_shards(ray_local, exported, many, tmp_path):
    sources = list_sources(many)
    for engine in ("local", "ray"):
        plan = plan_shards(sources, tmp_path / engine, model=exported.path, shard_size=128)
        if engine == "ray":
            score_to_shards_ray(exported.path, plan)
        else:
            score_to_shards(Predictor(exported.path), plan, workers=2)
    for name in sorted(p.name for p in (tmp_path / "local").glob("shard-*")):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()


def test_a_listing_with_file_uris_and_a_missing_file(ray_local, exported, many, tmp_path):
    files = list_sources(many)[:10]
    listing = tmp_path / "list.txt"
    lines = [
        "# ten files, one as a file:// URI, one that does not exist",
        *files[:8],
        Path(files[8]).as_uri(),
        str(tmp_path / "gone.jpg"),
        "",
        files[9],
        files[0],
    ]
    listing.write_text("\n".join(lines) + "\n")
    sources = list_sources(listing)
    assert len(sources) == 11  # de-duplicated, comments and blanks skipped
    plan = plan_shards(sources, tmp_path / "out", model=exported.path, shard_size=4)
    score_to_shards_ray(exported.path, plan)
    rows = {r["path"]: r for r in read_shards(tmp_path / "out")}
    local = {r["path"]: r for r in _local_rows(exported.path, files)}
    assert rows[Path(files[8]).as_uri()] | {"path": files[8]} == local[files[8]]
    assert rows[str(tmp_path / "gone.jpg")]["error"] != ""
    assert all(rows[f] == local[f] for f in files if f != files[8])


def _local_rows(model: Path, files: list[str]) -> list[dict]:
    out = Path(files[0]).parents[2] / f"ref-{os.getpid()}.csv"
    write_csv(Predictor(model), [Path(f) for f in files], out, progress="silent")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    out.unlink()
    return rows


def test_another_runs_folder_is_refused(exported, int8, many, tmp_path):
    sources = list_sources(many)
    plan_shards(sources, tmp_path / "o", model=exported.path, shard_size=100)
    with pytest.raises(ValueError, match="another run.*model_sha256"):
        plan_shards(sources, tmp_path / "o", model=int8.path, shard_size=100)
    with pytest.raises(ValueError, match="another run.*shard_size"):
        plan_shards(sources, tmp_path / "o", model=exported.path, shard_size=50)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        plan_shards(sources, tmp_path / "busy", model=exported.path)


def _cli(*args: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fastcore_cv", "predict", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("case", ["missing source", "out is a file", "no out", "bad listing"])
def test_bad_input_is_one_clear_line_before_any_work(exported, tmp_path, case):
    (tmp_path / "file").write_text("x")
    (tmp_path / "photos.csv").write_text("a.jpg\n")
    args = {
        "missing source": [str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        "out is a file": [str(tmp_path), "--out", str(tmp_path / "file")],
        "no out": [str(tmp_path)],
        "bad listing": [str(tmp_path / "photos.csv"), "--out", str(tmp_path / "o")],
    }[case]
    run = _cli(str(exported.path), *args, "--engine", "ray")
    want = {"missing source": "SOURCE: .*nope does not exist",
            "out is a file": "--out: .*file exists and is not a folder",
            "no out": "--engine ray: give --out DIR",
            "bad listing": "SOURCE: .*photos.csv is neither"}[case]  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    import re

    assert re.search(want, run.stderr), run.stderr
    assert not (tmp_path / "o").exists()  # refused before any work or any folder


def test_a_killed_cli_run_resumed_writes_every_row_once(exported, many, tmp_path):
    """A real interruption: Ctrl-C (SIGINT) to the CLI once its first shards are on disk, with
    many more to go (100 shards of 5), then the same command again."""
    out = tmp_path / "out"
    cmd = [str(exported.path), str(many), "--engine", "ray", "--out", str(out),
           "--shard-size", "5", "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "fastcore_cv", "predict", *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("shard-*.csv")):  # the run is under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard appeared in 180 s"
            time.sleep(0.02)  # polling the real condition above, with its deadline
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err  # interrupted, not finished
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.csv")}
    assert 1 <= len(kept) < 100, len(kept)
    run = _cli(*cmd)
    assert run.returncode == 0, run.stderr
    assert f"({100 - len(kept)} written, {len(kept)} already there)" in run.stdout, run.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.csv")
            if p.name in kept} == kept  # fmt: skip
    assert [r["path"] for r in read_shards(out)] == list_sources(many)  # every row once
    assert not list(out.glob(".*.tmp"))

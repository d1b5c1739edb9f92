"""The production commands: train -> export -> quantize -> predict, and their exit codes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from fastcore_cv.cli import main
from fastcore_cv.perf.latency import IMAGE_TO_LABEL, MODEL_ONLY

CLASSES = ["astronaut", "cat", "coffee"]


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    """The real process, to see exit codes and stderr as a script would."""
    return subprocess.run(
        [sys.executable, "-m", "fastcore_cv", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def run_dir(photos, tmp_path_factory):
    """`train` on the photo folder (simple_cnn, 32 px) with --export."""
    out = tmp_path_factory.mktemp("run")
    code = main(["train", str(photos), "--arch", "simple_cnn", "--size", "32", "--bs", "4",
                 "--epochs", "1", "--lr", "1e-2", "--out", str(out), "--export"])  # fmt: skip
    assert code == 0
    return out


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_train_writes_a_weights_only_checkpoint_and_the_onnx_file(run_dir):
    side = json.loads((run_dir / "model.json").read_text())
    assert side["arch"] == "simple_cnn" and side["head"] == "linear"
    assert side["classes"] == ["astronaut", "cat", "coffee"]
    assert (run_dir / "model.pt").is_file() and (run_dir / "model.onnx").is_file()


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_export_quantize_predict_chain(run_dir, photos, tmp_path, capsys):
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    assert main(["export", str(run_dir / "model.pt"), str(fp32), "--verify", str(photos)]) == 0
    assert "parity vs torch on 30 images" in capsys.readouterr().out
    assert main(["quantize", str(fp32), str(int8), "--calibration", str(photos),
                 "--valid", str(photos)]) == 0  # fmt: skip
    assert "validation accuracy on 30 images" in capsys.readouterr().out
    image = sorted(photos.rglob("*.jpg"))[0]
    assert main(["predict", str(int8), str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{image}: ") and lines[0].endswith(" ms)")
    assert len(lines) == 3  # the answer, then the top 2
    assert main(["predict", str(fp32), str(image), str(image), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == [str(image)] * 2 and rows[0]["label"] in CLASSES
    csv_path = tmp_path / "p.csv"
    assert main(["predict", str(fp32), str(photos), "--csv", str(csv_path)]) == 0
    assert len(csv_path.read_text().splitlines()) == 31


def test_lr_find_prints_a_suggestion_and_saves_the_plot(photos, tmp_path, capsys):
    plot = tmp_path / "lr.png"
    assert main(["lr-find", str(photos), "--arch", "simple_cnn", "--size", "32", "--bs", "4",
                 "--plot", str(plot)]) == 0  # fmt: skip
    assert "suggested learning rate" in capsys.readouterr().out
    assert plot.stat().st_size > 1000


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_exit_codes_and_one_line_errors(run_dir, tmp_path):
    model, bad = run_dir / "model.onnx", tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    r = run_cli("predict", model, bad)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == f"fastcore-cv predict: error: {bad}: not an image (no image format recognised)"
    )
    r = run_cli("predict", tmp_path / "missing.onnx", bad)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("predict", model, bad, "--top-k", "0")
    assert r.returncode == 2 and "--top-k" in r.stderr
    r = run_cli("export", tmp_path / "nope.pt", tmp_path / "x.onnx")
    assert r.returncode == 1 and "checkpoint" in r.stderr and not (tmp_path / "x.onnx").exists()


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_predict_command_does_not_import_torch(run_dir, photos):
    image = sorted(photos.rglob("*.png"))[0]
    code = (
        "import sys\n"
        "from fastcore_cv.cli import main\n"
        f"assert main(['predict', {str(run_dir / 'model.onnx')!r}, {str(image)!r}]) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{image}: ")


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_bench_prints_the_latency_table_with_the_torch_speed_up(run_dir, capsys):
    model, checkpoint = run_dir / "model.onnx", run_dir / "model.pt"
    assert main(["bench", str(model), "--runs", "5", "--checkpoint", str(checkpoint)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fastcore-cv bench: chelsea") and "5 runs per row" in lines[0]
    assert lines[1].split() == ["model", "input", "p50", "ms", "p99", "ms", "vs", "torch", "(p50)"]
    rows = [line.split("  ") for line in lines[2:]]
    assert [r[0].strip() for r in rows] == ["model.onnx"] * 2 + ["torch eager (model.pt)"] * 2
    assert all(line.endswith("x") for line in lines[2:]) and lines[-1].endswith(" 1.00x")
    assert MODEL_ONLY in lines[2] and IMAGE_TO_LABEL in lines[3]


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_bench_without_a_checkpoint_never_imports_torch_and_loads_the_server(run_dir):
    code = (
        "import sys\n"
        "from fastcore_cv.cli import main\n"
        f"code = main(['bench', {str(run_dir / 'model.onnx')!r}, '--runs', '3',\n"
        "             '--load-clients', '2', '--load-seconds', '0.5'])\n"
        "assert code == 0, code\n"
        "assert 'torch' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and "vs torch" not in lines[1]
    assert lines[4].startswith("load model.onnx (1 worker(s), 1 thread(s) each, raw image body)")
    assert "errors none" in lines[4] and "server RSS" in lines[4]


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_bench_errors_are_one_line_and_help_works(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing.onnx"
    assert main(["bench", str(run_dir / "model.onnx"), str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastcore-cv bench: error: ")
    assert f"{missing} does not exist" in err[0]
    assert main(["bench", str(run_dir / "model.onnx"), "--image", str(missing)]) == 1
    assert "--image" in capsys.readouterr().err
    assert main(["bench", str(run_dir / "model.onnx"), "--load-seconds", "5"]) == 1
    assert "--load-clients" in capsys.readouterr().err
    for argv, code in ((["--help"], 0), ([str(missing), "--runs", "0"], 2)):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", *argv])
        assert exit_.value.code == code
    assert "--load-clients" in capsys.readouterr().out


DATA = ["--arch", "simple_cnn", "--size", "32", "--bs", "4"]
TRAIN = ["train", *DATA, "--lr", "1e-2"]


def bad_outputs(tmp_path) -> dict[str, object]:
    """Output paths no command can write (tests run as root: permission bits stop nothing)."""
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    return {
        "an existing file": (regular, "exists and is not a folder"),
        "a path under a regular file": (regular / "run", f"{regular} is not a folder"),
        "/proc": ("/proc/fastcore-cv-run", "cannot write in /proc"),
    }


@pytest.mark.parametrize("case", ["an existing file", "a path under a regular file", "/proc"])
def test_train_refuses_a_bad_out_before_training(case, photos, tmp_path, capsys):
    out, why = bad_outputs(tmp_path)[case]
    assert main([TRAIN[0], str(photos), *TRAIN[1:], "--epochs", "1", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the data was even read: no epoch was trained
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastcore-cv train: error: --out: ")
    assert why in err[0]


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_each_command_checks_its_output_before_the_work(run_dir, photos, tmp_path, capsys):
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    model, checkpoint = run_dir / "model.onnx", run_dir / "model.pt"
    cases = [
        (["export", checkpoint, folder, "--verify", photos], "out", "is a folder"),
        (["quantize", model, regular / "m.int8.onnx", "--calibration", photos], "int8",
         f"cannot create {regular}"),
        (["predict", model, photos, "--csv", folder], "--csv", "is a folder"),
        (["lr-find", photos, *DATA, "--plot", regular / "lr.png"], "--plot",
         f"{regular} is not a folder"),
        (["demo", "--out", regular, "--epochs", "1"], "--out", "exists and is not a folder"),
    ]  # fmt: skip
    for argv, flag, why in cases:
        assert main(list(map(str, argv))) == 1, argv
        captured = capsys.readouterr()
        assert captured.out == "", argv  # nothing was done
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"fastcore-cv {argv[0]}: error: {flag}: ")
        assert why in err[0], err
    assert list(folder.iterdir()) == [] and regular.read_text() == "not a folder"


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_a_failed_save_after_training_keeps_the_weights_in_a_rescue_folder(photos, tmp_path):
    """The --out folder is fine when checked, then replaced by a file while training runs:
    the trained weights land in ./fastcore-cv-rescue-*/ and stderr says where (exit 1)."""
    from fastcore_cv.export import load_checkpoint

    out = tmp_path / "out"
    argv = [TRAIN[0], photos, *TRAIN[1:], "--epochs", "10", "--out", out]
    with subprocess.Popen(
        [sys.executable, "-m", "fastcore_cv", *map(str, argv)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        first = proc.stdout.readline()  # the data summary, printed after the check and
        out.write_text("in the way")  # before 11 epochs of training
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert first and proc.returncode == 1, stderr
    err = stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastcore-cv train: error: --out: "), err
    rescued = list(tmp_path.glob("fastcore-cv-rescue-*/model.pt"))
    assert len(rescued) == 1 and f"saved in {rescued[0]} (+ model.json)" in err[0]
    ckpt = load_checkpoint(rescued[0])
    assert ckpt.arch == "simple_cnn" and list(ckpt.classes) == CLASSES
    assert "valid_loss" in stdout  # the epochs really ran


@pytest.mark.slow  # trains a model (run_dir) or a whole run
def test_a_pickled_checkpoint_is_refused_in_one_line(run_dir, tmp_path):
    import torch

    state = {"w": torch.zeros(2)}
    for name, write, why in (
        ("module.pt", lambda p: torch.save(torch.nn.Linear(2, 2), p),  # a pickled module
         "weights-only state_dict"),
        ("raw.pt", lambda p: p.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4)),
         "zip-format torch.save file"),
        # torch.save's pre-1.6 format: a state_dict, but one weights-only loading cannot read
        ("old.pt", lambda p: torch.save(state, p, _use_new_zipfile_serialization=False),
         "zip-format torch.save file (weights-only loading needs it: re-save"),
    ):  # fmt: skip
        path = tmp_path / name
        write(path)
        shutil.copy(run_dir / "model.json", path.with_suffix(".json"))
        r = run_cli("export", path, tmp_path / "x.onnx")
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.count("\n") == 1, r.stderr  # one line, no torch advice, no warning
        assert r.stderr.startswith(f"fastcore-cv export: error: checkpoint: {path} is not a "
                                   f"{why}"), r.stderr  # fmt: skip
        assert "never loads pickled" in r.stderr
        assert not (tmp_path / "x.onnx").exists()

"""The inference-only install: predict, evaluate and serve without torch or Numba, and the
commands that need them say which extra to install, in one line.

The fast test blocks torch and Numba in a child process of this venv (``sys.modules[name] =
None`` makes every import of them fail, as a missing package does); the slow one installs the
package for real (``pip install <copy of the repo>``, no extras) into a fresh venv.
"""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastcore_cv.perf.load import multipart_body
from fastcore_cv.perf.server import ServerProcess

REPO = Path(__file__).resolve().parents[2]
TRAIN_ONLY = ("torch", "numba", "onnx", "onnxscript", "matplotlib")
HINT = "pip install 'fastcore-cv[train]'"

BLOCKED_CLI = textwrap.dedent(f"""
    import sys
    for name in {TRAIN_ONLY!r}:
        sys.modules[name] = None  # import fails with ModuleNotFoundError, as when not installed
    from fastcore_cv.cli import main
    code = main(sys.argv[1:])
    assert not any(sys.modules.get(n) for n in {TRAIN_ONLY!r}), "a blocked module loaded"
    sys.exit(code)
""")


def run_cli(python: str | Path, args: list[str], script: str | None = None):
    head = [str(python), "-c", script] if script else [str(python), "-m", "fastcore_cv"]
    return subprocess.run([*head, *map(str, args)], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def check_inference_commands(python, model: Path, photos: Path, tmp: Path, script=None):
    """predict --csv, evaluate and info work; train prints the one-line extra hint and fails."""
    out = run_cli(python, ["predict", model, photos, "--csv", tmp / "p.csv"], script)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp / "p.csv").open()))
    assert len(rows) == 30 and all(r["label"] and not r["error"] for r in rows)
    out = run_cli(python, ["evaluate", model, photos, "--out", tmp / "ev", "--progress",
                           "silent", "--min-accuracy", "0.8"], script)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp / "ev" / "report.json").read_text())["images"] == 30
    assert (tmp / "ev" / "confusion_matrix.png").stat().st_size > 0
    out = run_cli(python, ["info", model, "--json"], script)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model_id"].startswith("sha256:")
    for command in (["train", photos, "--out", tmp / "run"], ["warmup"]):
        out = run_cli(python, command, script)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and HINT in lines[0], out.stderr
        assert f"fastcore-cv {command[0]}: error: needs " in lines[0]


def test_inference_commands_run_with_torch_and_numba_blocked(exported, photos, tmp_path):
    check_inference_commands(sys.executable, exported.path, photos, tmp_path, BLOCKED_CLI)
    check_serve([sys.executable, "-c", BLOCKED_CLI], exported.path, photos, exported.dls.classes)


class PrefixedServer(ServerProcess):
    """``fastcore-cv serve`` started by ``prefix`` (another venv's Python, or the blocking
    script) instead of ``python -m fastcore_cv``."""

    def __init__(self, prefix: list[str], model: Path) -> None:
        super().__init__(model, startup_timeout_s=120)
        self.prefix = [str(p) for p in prefix]

    def command(self) -> list[str]:
        return [*self.prefix, *super().command()[3:]]  # [python, -m, fastcore_cv] replaced


def check_serve(prefix: list, model: Path, photos: Path, classes: list[str]) -> None:
    """A real server answers /predict with a label (200) once /health says ready."""
    jpeg = next(photos.rglob("*.jpg")).read_bytes()
    with PrefixedServer(prefix, model) as server:
        status, answer = post_image(server, jpeg)
    assert status == 200 and answer["label"] in classes, answer


def post_image(server: ServerProcess, data: bytes) -> tuple[int, dict]:
    body, content_type = multipart_body(data)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def package_copy(dest: Path) -> Path:
    """The repo's package sources in ``dest``: pip builds there, not in the shared checkout."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "fastcore_cv", dest / "fastcore_cv",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    return dest


@pytest.mark.slow
def test_a_fresh_venv_with_the_base_install_predicts_and_serves(exported, photos, tmp_path):
    """pip install the package (no extras) into a new venv: no torch, no Numba; predict,
    evaluate and serve work there on a model exported here; train says which extra."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    src = package_copy(tmp_path / "src")
    pip = subprocess.run([python, "-m", "pip", "install", "--quiet", src],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    for name in ("torch", "numba"):
        probe = subprocess.run([python, "-c", f"import {name}"], capture_output=True, text=True)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, name
    check_inference_commands(python, exported.path, photos, tmp_path)
    check_serve([python, "-m", "fastcore_cv"], exported.path, photos, exported.dls.classes)

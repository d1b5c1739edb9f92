"""The Dockerfile, linted (no docker daemon here, no hadolint): a non-root user, a health check
on /health that really works against the server, the inference install only (no torch), the
model read from /models, and an entry point the real CLI parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments out."""
    text = (ROOT / "Dockerfile").read_text()
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def _final_stage() -> list[tuple[str, str]]:
    ins = _instructions()
    last_from = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    return ins[last_from:]


def test_runs_as_a_non_root_user_with_a_health_check():
    final = _final_stage()
    users = [v for k, v in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    user_at = max(i for i, (k, _) in enumerate(final) if k == "USER")
    assert all(k != "RUN" for k, _ in final[user_at:])  # nothing runs as root after it
    checks = [v for k, v in final if k == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0]


def test_installs_the_inference_set_only():
    runs = " ".join(v for k, v in _instructions() if k == "RUN")
    assert "torch" not in runs.replace("'torch'", "")  # only in the check that it is absent
    for command in (c for c in runs.split("&&") if "pip install" in c):
        assert "[" not in command, f"an extra is installed: {command}"
    assert "find_spec" in runs  # the build fails if torch or numba came along
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") :] and "!fastcore_cv/" in ignored  # no .venv in context


def test_the_command_is_one_the_cli_parses():
    final = _final_stage()
    entry = json.loads(next(v for k, v in final if k == "ENTRYPOINT"))
    cmd = json.loads(next(v for k, v in final if k == "CMD"))
    assert entry == ["fastcore-cv", "serve"] and cmd[0] == "/models/model.onnx"
    import argparse

    from fastcore_cv.cli import deploy

    parser = argparse.ArgumentParser()
    deploy.add_commands(parser.add_subparsers())
    args = parser.parse_args(entry[1:] + cmd)
    assert (args.model, args.host, args.port) == ("/models/model.onnx", "0.0.0.0", 8000)


@pytest.mark.slow  # starts a server
def test_the_health_check_command_passes_on_a_ready_server_only(model_path, kit):
    """The HEALTHCHECK's own command, pointed at a real server: 0 when ready, else not 0."""
    from fastcore_cv.serve import create_app

    check = json.loads(next(v for k, v in _final_stage() if k == "HEALTHCHECK").split("CMD", 1)[1])
    assert check[:2] == ["python", "-c"]

    def run(url: str) -> int:
        code = check[2].replace("http://127.0.0.1:8000", url)
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, timeout=30
        ).returncode

    with kit.ServerThread(create_app(model_path)) as s:
        assert run(s.url) == 0
        app_state = s.server.config.app.state.readiness
        app_state["status"] = "starting"  # as before the warm-up: 503
        try:
            assert run(s.url) != 0
        finally:
            app_state["status"] = "ok"
    assert run(s.url) != 0  # stopped: nothing answers

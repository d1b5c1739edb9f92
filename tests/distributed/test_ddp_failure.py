"""A rank that dies mid-training ends the whole run, non-zero, naming the rank, within 60 s
(the launcher watches its ranks: distributed/launch.py). Real processes on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.slow
DEADLINE_S = 60.0


def test_a_dead_rank_stops_the_run(textures, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FASTCORE_CV_DDP_TEST_EXIT_RANK": "1"}
    argv = ["train", textures, "--size", "32", "--bs", "16", "--freeze-epochs", "1", "--head-lr",
            "0.01", "--epochs", "1", "--nproc", "2", "--out", tmp_path / "m"]  # fmt: skip
    p = subprocess.Popen([sys.executable, "-m", "fastcore_cv", *map(str, argv)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    died, lines = threading.Event(), []

    def read() -> None:
        for line in p.stderr:
            lines.append(line)
            if "rank 1: exiting (test hook)" in line:
                died.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert died.wait(timeout=300), "".join(lines)  # rank 1 reached the whole-model stage
        t0 = time.monotonic()
        code = p.wait(timeout=DEADLINE_S)  # raises if the launcher hangs
        assert time.monotonic() - t0 < DEADLINE_S
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(timeout=10)
    assert code == 1
    text = "".join(lines)
    assert "rank 1 of 2 failed (exit code 17); stopped the other ranks" in text, text
    assert not (tmp_path / "m" / "model.pt").exists()

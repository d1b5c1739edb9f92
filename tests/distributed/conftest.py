"""Fixtures of the data-parallel tests: a real folder of texture photos (scikit-image crops,
as tests/test_train_command.py uses) and the real command as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("skimage")


@pytest.fixture(scope="session")
def textures(tmp_path_factory) -> Path:
    """brick/grass/gravel, 10 per class in train/ and in valid/, 96 px crops."""
    from fastcore_cv.vision.datasets import write_texture_folder

    return write_texture_folder(tmp_path_factory.mktemp("ddp-textures"), size=96, stride=96)


def _cli(*argv: object, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python -m fastcore_cv ARGV`` to completion (a hung run fails at ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "fastcore_cv", *map(str, argv)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )  # fmt: skip


@pytest.fixture(scope="session")
def cli():
    """Runs the real command line as a subprocess (``cli(*argv)``)."""
    return _cli

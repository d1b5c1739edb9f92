"""Fixtures for the cleaner: real photo folders with planted problems, and real models.

``planted`` copies the texture crops (scikit-image's brick/grass/gravel photos, train/ and
valid/) and plants: 6 files moved into a wrong class (3 in train/, 3 in valid/), an exact
copy in another class, a resized JPEG copy, and a corrupt (cut short) PNG. The models are
EfficientNet-Lite0 with its ImageNet body and a new (untrained) head, as a weights-only
checkpoint and as an exported .onnx file: the cleaner's scores come from the body.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

CLASSES = ["brick", "grass", "gravel"]
SIZE = 64


@pytest.fixture(scope="session")
def texture_base(tmp_path_factory) -> Path:
    from fastcore_cv.vision import write_texture_folder

    return write_texture_folder(tmp_path_factory.mktemp("textures") / "tex", size=96, stride=48)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> SimpleNamespace:
    """The checkpoint (fast to write); ``onnx_model`` exports the same model (slow)."""
    import torch

    from fastcore_cv.export.checkpoint import save_checkpoint
    from fastcore_cv.vision.models import BodyHead, build_arch, make_head
    from fastcore_cv.vision.preprocessing import PreprocessConfig

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("clean_models")
    lite = build_arch("efficientnet_lite0", True, len(CLASSES))
    model = BodyHead(lite.body, make_head(lite.num_features, len(CLASSES), "linear")).eval()
    config = PreprocessConfig(SIZE)
    ckpt = save_checkpoint(
        model, d / "model.pt", arch="efficientnet_lite0", classes=CLASSES, preprocess_config=config
    )
    return SimpleNamespace(checkpoint=ckpt, model=model, config=config, dir=d)


@pytest.fixture(scope="session")
def onnx_model(models) -> Path:
    """The same model exported to .onnx (tens of seconds on a busy machine: slow tests only)."""
    from fastcore_cv.export import to_onnx

    path = models.dir / "model.onnx"
    to_onnx(models.model, path, classes=CLASSES, preprocess_config=models.config)
    return path


def plant(root: Path) -> SimpleNamespace:
    """Plant the problems in a copy of the texture folder; returns what was planted."""
    errors = []
    for split in ("train", "valid"):
        for k, c in enumerate(CLASSES):
            wrong = CLASSES[(k + 1) % len(CLASSES)]
            src = root / split / c / "005.png"
            dst = root / split / wrong / f"was_{c}.png"
            src.rename(dst)
            errors.append((dst.relative_to(root).as_posix(), c))
    exact = ("train/grass/010.png", "train/gravel/copy_of_grass_010.png")
    shutil.copyfile(root / exact[0], root / exact[1])
    resized = ("train/gravel/011.png", "train/gravel/smaller_011.jpg")
    with Image.open(root / resized[0]) as im:
        im.convert("RGB").resize((72, 72)).save(root / resized[1], quality=70)
    corrupt = "train/brick/cut_short.png"
    (root / corrupt).write_bytes((root / "train/brick/012.png").read_bytes()[:400])
    return SimpleNamespace(root=root, errors=errors, exact=exact, resized=resized, corrupt=corrupt)


@pytest.fixture
def planted(texture_base, tmp_path) -> SimpleNamespace:
    root = tmp_path / "photos"
    shutil.copytree(texture_base, root)
    return plant(root)


def file_hashes(root: Path) -> set[tuple[str, str]]:
    """(relative path, sha256) of every file under ``root`` outside ``.fastcore-cv/``."""
    out = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".fastcore-cv"]
        for f in files:
            p = Path(folder, f)
            out.add((p.relative_to(root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()))
    return out


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    return SimpleNamespace(file_hashes=file_hashes, plant=plant)


@pytest.fixture(scope="session")
def scored(texture_base, models, tmp_path_factory) -> SimpleNamespace:
    """A planted texture folder scored once with the checkpoint (scores.json cached)."""
    from fastcore_cv.clean.session import CleanSession

    root = tmp_path_factory.mktemp("scored") / "photos"
    shutil.copytree(texture_base, root)
    info = plant(root)
    info.session = CleanSession(root, models.checkpoint)
    return info


@pytest.fixture
def fresh(scored, models, tmp_path) -> SimpleNamespace:
    """A copy of ``scored``'s folder (times kept, so its cached scores are reused)."""
    from fastcore_cv.clean.session import CleanSession

    root = tmp_path / "photos"
    shutil.copytree(scored.root, root, copy_function=shutil.copy2)
    info = SimpleNamespace(**{**vars(scored), "root": root})
    info.session = CleanSession(root, models.checkpoint)
    return info


class CleanServer:
    """``python -m fastcore_cv clean FOLDER --model M`` on a free port (perf's ServerProcess:
    ready when /health answers, stopped with its whole process group)."""

    def __new__(cls, folder: Path, model: Path):
        import sys

        from fastcore_cv.perf.server import ServerProcess

        class _Server(ServerProcess):
            def command(self) -> list[str]:
                return [
                    sys.executable,
                    "-m",
                    "fastcore_cv",
                    "clean",
                    str(folder),
                    "--model",
                    str(self.model),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                ]

        return _Server(model, startup_timeout_s=180)


def http(url: str, method: str = "GET", body: object = None) -> tuple[int, object]:
    """(status, the JSON answer or the raw bytes) of one request."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            is_json = r.headers.get("content-type", "").startswith("application/json")
            return r.status, json.loads(raw) if is_json else raw
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="session")
def web() -> SimpleNamespace:
    return SimpleNamespace(server=CleanServer, http=http)

"""fastcore_cv.output_files: the one home of atomic writes and of "can this path be written?"."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from fastcore_cv import output_files


def test_one_atomic_helper_for_the_learner_and_the_export_package():
    from fastcore_cv.export import (
        batch,
        checkpoint,
        confusion_plot,
        evaluate,
        onnx_export,
        quantization,
    )
    from fastcore_cv.learner import callbacks

    assert callbacks.atomic_save is output_files.atomic_save is checkpoint.atomic_save
    # The Predictor's folder CSV is written by export/batch.py.
    for module in (batch, checkpoint, confusion_plot, evaluate, onnx_export, quantization):
        assert module.atomic_path is output_files.atomic_path, module.__name__


def test_check_writable_accepts_new_and_existing_paths(tmp_path):
    (tmp_path / "old.onnx").write_bytes(b"previous model")
    assert output_files.check_writable(tmp_path / "old.onnx", "out") == tmp_path / "old.onnx"
    assert (
        output_files.check_writable(tmp_path / "new" / "deeper" / "m.onnx", "out").name == "m.onnx"
    )
    assert output_files.check_writable(tmp_path, "--out", folder=True) == tmp_path
    assert (
        output_files.check_writable(tmp_path / "a" / "b", "--out", folder=True)
        == tmp_path / "a" / "b"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]  # created nothing


@pytest.mark.parametrize(
    ("target", "folder", "why"),
    [
        ("file", True, "{file} exists and is not a folder"),
        ("file/sub", True, "cannot create {file}/sub: {file} is not a folder"),
        ("file/sub/m.onnx", False, "cannot create {file}/sub: {file} is not a folder"),
        ("dir", False, "{dir} is a folder; expected a file to write"),
        ("/dev/null", False, "/dev/null exists and is not a regular file"),
        ("/proc/fastcore-cv/m.onnx", False, "cannot write in /proc"),
        ("/proc/fastcore-cv", True, "cannot write in /proc"),
    ],
)
def test_check_writable_refuses_what_cannot_be_written_even_as_root(tmp_path, target, folder, why):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    names = {"file": tmp_path / "file", "dir": tmp_path / "dir"}
    path = target if target.startswith("/") else str(tmp_path / target)
    with pytest.raises(ValueError) as e:
        output_files.check_writable(path, "--out", folder=folder)
    assert str(e.value) == f"--out: {why.format(**names)}" or str(e.value).startswith(
        f"--out: {why.format(**names)} ("
    )


def test_atomic_save_is_readable_by_others_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "w.pt"
    assert output_files.atomic_save({"a": torch.ones(2)}, path) == path
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # a server may run as another user
    with pytest.raises(Exception, match="pickle|lambda"):
        output_files.atomic_save({"f": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


@pytest.mark.slow  # 3000 writes against a racing thread (~14 s)
def test_atomic_path_leaves_the_umask_alone_for_other_threads(tmp_path):
    """atomic_path must not set the process-wide umask, even briefly: a file another thread
    creates meanwhile would get the wrong mode (os.umask(0) made it world-writable)."""
    import sys
    import threading

    expected = 0o666 & ~output_files._UMASK
    stop, modes = threading.Event(), set()

    def writer() -> None:
        for i in range(3000):
            with output_files.atomic_path(tmp_path / "out" / f"{i % 4}.bin") as tmp:
                tmp.write_bytes(b"x")
        stop.set()

    def creator() -> None:
        i = 0
        while not stop.is_set():
            path = tmp_path / f"other{i % 8}"
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
            modes.add(stat.S_IMODE(os.fstat(fd).st_mode))
            os.close(fd)
            os.unlink(path)
            i += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a busy server would
    try:
        threads = [threading.Thread(target=writer), threading.Thread(target=creator)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert modes == {expected}
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "0.bin").st_mode) == expected

"""The one progress display: a bar on a terminal or in a notebook, ~10 plain lines in logs."""

import io
import os
import sys
import types

import pytest

from fastcore_cv.progress import Progress, resolve_mode


def test_plain_mode_prints_about_ten_lines_and_the_last_one():
    out = io.StringIO()
    with Progress(25, "predict", "plain", unit="images", file=out) as bar:
        for i in range(25):
            bar.update(status="" if i < 24 else "done")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 13  # every 2nd of 25, and the 25th
    assert lines[0] == "predict: 2/25 images" and lines[-1] == "predict: 25/25 done"


def test_silent_and_empty_print_nothing(capsys):
    for total, mode in ((5, "silent"), (0, "plain"), (0, "bar")):
        with Progress(total, "x", mode) as bar:
            bar.update()
    assert capsys.readouterr() == ("", "")


def test_auto_is_a_bar_on_a_terminal_or_in_a_notebook_but_plain_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert resolve_mode("auto") == "plain"
    # Importing ipykernel (the notebook tests' process does) does not make a notebook:
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    assert resolve_mode("auto") == "plain"
    # A running kernel's shell does (the real kernel: tests/test_notebooks.py).
    kernel_shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    fake_ipython = types.SimpleNamespace(get_ipython=lambda: kernel_shell)
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert resolve_mode("auto") == "bar"
    monkeypatch.delitem(sys.modules, "IPython")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert resolve_mode("auto") == "bar"
    monkeypatch.setenv("CI", "true")
    assert resolve_mode("auto") == "plain"


def test_bar_mode_draws_with_tqdm(capsys):
    with Progress(3, "epoch 0", "bar") as bar:
        for _ in range(3):
            bar.update(status="loss=0.5")
    assert "epoch 0" in capsys.readouterr().err


def test_a_bad_mode_is_named():
    with pytest.raises(ValueError, match="progress: expected one of"):
        Progress(3, "x", "loud")
    with pytest.raises(ValueError, match="mode"):
        resolve_mode("loud", "mode")


def test_auto_on_a_real_terminal_draws_tqdms_text_bar(monkeypatch):
    """A pseudo-terminal is a terminal: the bar redraws in place with carriage returns, as
    tqdm always did in a terminal (nothing changed there); under CI the same stream gets
    plain lines."""
    monkeypatch.delenv("CI", raising=False)
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            with Progress(4, "epoch 0", "auto", file=tty) as bar:
                assert bar.mode == "bar" and type(bar.bar).__module__ == "tqdm.std"
                for _ in range(4):
                    bar.update(status="loss=0.5")
            monkeypatch.setenv("CI", "true")
            with Progress(4, "epoch 1", "auto", file=tty) as bar:
                assert bar.mode == "plain" and bar.bar is None
                for _ in range(4):
                    bar.update()
        chunks = []
        while True:  # the terminal hands the text back in pieces; EIO once it is all read
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        written = b"".join(chunks).decode()
    finally:
        os.close(master)
    assert "\repoch 0" in written and "loss=0.5" in written  # redrawn from the line start
    assert "epoch 1: 4/4 it" in written

"""The one progress display: a bar on a terminal or in a notebook, ~10 plain lines in logs."""

import io
import sys

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
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert resolve_mode("auto") == "plain"
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # a notebook kernel is loaded
    assert resolve_mode("auto") == "bar"
    monkeypatch.delitem(sys.modules, "ipykernel")
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

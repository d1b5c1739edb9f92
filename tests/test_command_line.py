"""The ``fastcore-cv`` command line as a whole: every command answers --help, and the
kernel tour runs."""

from __future__ import annotations

import pytest

from fastcore_cv.cli import build_parser, main

COMMANDS = ["demo", "tour", "warmup", "train", "lr-find", "export", "quantize", "predict",
            "serve", "bench", "evaluate", "info", "clean"]  # fmt: skip


def test_every_command_the_issue_names_is_there():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fastcore-cv {command}")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fly"])
    assert e.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err


def test_tour_checks_every_kernel_against_numpy(one_thread, capsys):
    assert main(["tour", "--quick"]) == 0
    out = capsys.readouterr().out
    for idea in ("dot product", "matrix product", "softmax cross-entropy"):
        assert idea in out

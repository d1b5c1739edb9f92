"""``fastcore-cv clean`` without a browser: --report prints the suspects table, --csv writes
them, --apply applies the journalled decisions; bad input exits 1 with one line."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from fastcore_cv.cli import main


def test_report_and_csv_list_the_planted_problems(fresh, models, capsys, tmp_path):
    out = tmp_path / "suspects.csv"
    code = main(
        [
            "clean",
            str(fresh.root),
            "--model",
            str(models.checkpoint),
            "--report",
            "--top",
            "12",
            "--csv",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    lines = printed.splitlines()
    assert "1 undecodable" in lines[0] and "checkpoint body" in lines[0]
    assert lines[1].split()[:4] == ["#", "path", "label", "predicted"]
    table = "\n".join(lines[2:14])
    assert sum(path in table for path, _ in fresh.errors) >= 5
    assert fresh.corrupt in table and fresh.exact[1] in table
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["path"] for r in rows} >= {fresh.corrupt, fresh.exact[1], fresh.resized[1]}
    assert next(r for r in rows if r["path"] == fresh.exact[1])["duplicate_of"] == fresh.exact[0]


def test_apply_applies_the_journalled_decisions(fresh, capsys):
    fresh.session.decide({"path": fresh.exact[1], "action": "delete"})
    assert main(["clean", str(fresh.root), "--apply"]) == 0  # no model: the cached scores
    assert "1 moved to" in capsys.readouterr().out
    assert (fresh.root / ".fastcore-cv/trash" / fresh.exact[1]).is_file()
    assert (fresh.root / "cleaned.csv").is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["clean", "/nonexistent/photos", "--model", "m.pt"], "does not exist"),
        (["clean", "{root}", "--model", "{root}/missing.onnx"], "missing.onnx"),
        (["clean", "{root}", "--model", "{root}/train/brick/000.png"], "000.png"),
        (["clean", "{root}", "--report"], "--model"),
        (["clean", "{root}", "--apply"], "no scores yet"),
    ],
)
def test_bad_input_exits_1_with_one_line(planted, capsys, args, says):
    code = main([a.format(root=planted.root) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 1 and says in err and len(err.splitlines()) == 1
    assert err.startswith("fastcore-cv clean: error: ")


def test_without_the_clean_extra_it_says_how_to_install(planted):
    code = (
        "import sys; sys.modules['cleanlab'] = None\n"
        "from fastcore_cv.cli import main\n"
        f"sys.exit(main(['clean', {str(planted.root)!r}, '--model', 'm.pt', '--report']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "fastcore-cv clean: error: cleaning needs cleanlab: pip install 'fastcore-cv[clean]'"
    ]

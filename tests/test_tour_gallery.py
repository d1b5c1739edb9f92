"""The tour's diagnosis gallery: the digits MLP trained right once and wrong four ways on
purpose, each run diagnosed as the lesson says (tour.gallery), plots written."""

import numpy as np
import pytest

from fastcore_cv import tour

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("sklearn.datasets")
    import fastcore_cv

    before = fastcore_cv.get_num_threads()
    fastcore_cv.set_num_threads(1)  # a tiny MLP: see tests/conftest.py one_thread
    try:
        out = tmp_path_factory.mktemp("gallery")
        return out, {g.title: g for g in tour.gallery(out)}
    finally:
        fastcore_cv.set_num_threads(before)


pytestmark = pytest.mark.slow  # five trainings of the digits MLP: ~10 s of CPU


def test_good_run_gets_no_finding_and_low_error(runs):
    good = runs[1]["a good run"]
    assert good.codes == [] and good.error < 0.06


@pytest.mark.parametrize(
    "title, code",
    [
        ("LR 100x too high", "lr_too_high"),
        ("LR 1000x too low", "lr_too_low"),
        ("one epoch", "one_epoch"),
        ("too many epochs", "too_many_epochs"),
    ],
)
def test_each_wrong_run_gets_its_finding_with_its_numbers(runs, title, code):
    g = runs[1][title]
    assert g.expected == code and code in g.codes, g.codes
    finding = next(f for f in g.findings if f.code == code)
    assert finding.evidence and all(np.isfinite(v) for v in finding.evidence.values())
    assert g.diagnosed


def test_too_many_epochs_names_the_epoch_where_the_error_was_best(runs):
    g = runs[1]["too many epochs"]
    errors = [r.metrics["error_rate"] for r in g.history.epochs]
    (finding,) = [f for f in g.findings if f.code == "too_many_epochs"]
    assert finding.epoch == int(np.argmin(errors)) < len(errors) - 1
    assert f"best at epoch {finding.epoch}" in finding.message
    assert errors[-1] > min(errors)


def test_plots_and_the_table(runs):
    out, by_title = runs
    for g in by_title.values():
        assert g.plot.parent == out and g.plot.read_bytes()[:8] == PNG
    assert (out / "lr_find.png").read_bytes()[:8] == PNG
    table = tour.gallery_table(list(by_title.values()))
    assert "MISSED" not in table and table.count("[ok]") == 5

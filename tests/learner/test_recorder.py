"""Recorder: the epoch table, plots saved as PNG, and the plain History type."""

import numpy as np
import pytest

from fastcore_cv.learner import History, Learner, accuracy
from fastcore_cv.learner.recorder import EpochRow, Recorder, ema

PNG = b"\x89PNG\r\n\x1a\n"


def test_table_rows_and_missing_values():
    rec = Recorder()
    rec.begin_fit(["accuracy"])
    rec.log_epoch(EpochRow(0, 0.5, 0.25, {"accuracy": 0.875}, 61.0))
    rec.log_epoch(EpochRow(1, float("nan"), None, {}, 1.2))
    lines = rec.table().splitlines()
    head = ["epoch", "train_loss", "train_loss_eval", "valid_loss", "accuracy", "time"]
    assert lines[0].split() == head
    assert lines[1].split() == ["0", "0.500000", "-", "0.250000", "0.875000", "01:01"]
    assert lines[2].split() == ["1", "nan", "-", "-", "-", "00:01"]
    assert str(rec) == rec.table()


def test_plots_are_pngs(dls, mlp, tmp_path):
    learn = Learner(mlp(), dls, metrics=[accuracy], progress="silent")
    with pytest.raises(ValueError, match="fit first"):
        learn.recorder.plot_loss(tmp_path / "x.png")
    learn.fit_one_cycle(2, 0.1)
    for p in (
        learn.recorder.plot_loss(tmp_path / "loss.png"),
        learn.recorder.plot_sched(tmp_path / "s.png"),
    ):
        assert p.read_bytes()[:8] == PNG


def test_plotting_leaves_no_pyplot_figures_open(dls, mlp, tmp_path):
    import matplotlib.pyplot as plt

    learn = Learner(mlp(), dls, progress="silent")
    learn.fit(1, 0.1)
    learn.recorder.plot_loss(tmp_path / "loss.png")
    assert plt.get_fignums() == []  # Figure objects, not pyplot: nothing leaks in loops


def test_ema_is_debiased():
    np.testing.assert_allclose(ema(np.full(10, 3.0)), 3.0)
    v = np.array([1.0, 2.0, 4.0])
    want, avg = [], 0.0
    for i, x in enumerate(v):
        avg = 0.98 * avg + 0.02 * x
        want.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(ema(v), want)
    assert ema(v)[0] == 1.0


def test_history_from_epochs():
    h = History.from_epochs([1.0, 0.5], [0.9, None], metrics={"error_rate": [0.3, 0.2]})
    assert h.train_losses == [1.0, 0.5] and h.valid_losses == [0.9, None]
    assert h.column("error_rate") == [0.3, 0.2] and h.column("nope") == [None, None]
    with pytest.raises(ValueError, match="valid"):
        History.from_epochs([1.0], [])

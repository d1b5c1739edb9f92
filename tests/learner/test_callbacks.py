"""Callbacks: early stopping, atomic save-best, progress output fit for logs."""

import io
import os
from types import SimpleNamespace

import pytest
import torch

from fastcore_cv.learner import (
    EarlyStopping,
    EpochRow,
    Learner,
    ProgressCallback,
    Recorder,
    SaveBest,
    accuracy,
    atomic_save,
)


def fake_learn(values, name="valid_loss"):
    """A stand-in exposing what monitor callbacks read: recorder history, epoch, stop flag."""
    rec = Recorder()
    rec.begin_fit(["accuracy"])
    return SimpleNamespace(recorder=rec, epoch=0, stop_training=False, model=None), [
        EpochRow(i, 1.0, v if name == "valid_loss" else 1.0, {"accuracy": v})
        for i, v in enumerate(values)
    ]


def drive(cb, values, name="valid_loss"):
    learn, rows = fake_learn(values, name)
    cb.before_fit(learn)
    for row in rows:
        learn.epoch = row.epoch
        learn.recorder.log_epoch(row)
        cb.after_epoch(learn)
        if learn.stop_training:
            break
    return learn


def test_early_stopping_waits_patience_epochs():
    learn = drive(EarlyStopping(patience=2), [1.0, 0.8, 0.85, 0.9, 0.7])
    assert learn.epoch == 3 and learn.stop_training
    assert "best 0.8 at epoch 1" in learn.recorder.history.stop_reason
    learn = drive(EarlyStopping(patience=2), [1.0, 0.8, 0.85, 0.7, 0.75])
    assert not learn.stop_training  # improved in time


def test_early_stopping_min_delta_and_accuracy_is_maximised():
    learn = drive(EarlyStopping(patience=1, min_delta=0.05), [1.0, 0.99])
    assert learn.stop_training  # 0.01 better is not better enough
    learn = drive(EarlyStopping("accuracy", patience=1), [0.5, 0.6, 0.7])
    assert not learn.stop_training
    learn = drive(EarlyStopping("accuracy", patience=1), [0.5, 0.4])
    assert learn.stop_training


def test_nan_never_counts_as_improvement():
    learn = drive(EarlyStopping(patience=1), [1.0, float("nan")])
    assert learn.stop_training


def test_unknown_monitor_is_named(dls, mlp):
    learn = Learner(mlp(), dls, cbs=[EarlyStopping("f1")], progress="silent")
    with pytest.raises(ValueError, match="monitor: 'f1' is not recorded"):
        learn.fit(1)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")


def test_early_stopping_in_a_real_fit(dls, mlp):
    learn = Learner(mlp(), dls, cbs=[EarlyStopping(patience=1)], progress="silent")
    learn.fit(5, 0.0)  # LR 0: the valid loss never improves after epoch 0
    assert len(learn.recorder.history.epochs) == 2


def test_save_best_keeps_and_restores_the_best_weights(dls, mlp, tmp_path):
    path = tmp_path / "ckpt" / "best.pt"
    cb = SaveBest(path, monitor="accuracy")
    learn = Learner(mlp(), dls, metrics=[accuracy], cbs=[cb], progress="silent")
    learn.fit(4, 0.3)
    accs = learn.recorder.history.column("accuracy")
    assert cb.best_epoch == accs.index(max(accs)) and cb.best == max(accs)
    saved = torch.load(path, weights_only=True)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, saved[k])  # restored at the end of the fit
    assert learn.validate()["accuracy"] == pytest.approx(max(accs))
    assert os.listdir(path.parent) == ["best.pt"]  # no temp files left behind


def test_atomic_save_never_leaves_a_half_written_file(tmp_path):
    path = tmp_path / "w.pt"
    atomic_save({"a": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_save({"f": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert os.listdir(tmp_path) == ["w.pt"]


def test_plain_progress_is_one_line_per_epoch(dls, mlp):
    out = io.StringIO()
    learn = Learner(mlp(), dls, metrics=[accuracy], cbs=[ProgressCallback("plain", file=out)])
    learn.fit(3, 0.1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    head = ["epoch", "train_loss", "train_loss_eval", "valid_loss", "accuracy", "time"]
    assert lines[0].split() == head
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2"]


def test_auto_mode_picks_plain_under_ci_even_on_a_tty(dls, mlp, monkeypatch, capsys):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    monkeypatch.setenv("CI", "true")
    Learner(mlp(), dls).fit(1, 0.1)
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "\r" not in captured.err


def test_bar_mode_uses_tqdm(dls, mlp, capsys):
    learn = Learner(mlp(), dls, cbs=[ProgressCallback("bar")])
    learn.fit(1, 0.1)
    captured = capsys.readouterr()
    assert "epoch 0" in captured.err  # tqdm's description, on stderr
    assert len(captured.out.splitlines()) == 2  # header and the epoch row


def test_silent_mode_prints_nothing(dls, mlp, capsys):
    Learner(mlp(), dls, progress="silent").fit(1, 0.1)
    assert capsys.readouterr() == ("", "")

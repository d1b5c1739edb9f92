"""Decisions, apply and undo on real files: journalled decisions come back when the folder is
reopened, apply only moves (trash, class folders, renamed on a clash), undo restores every
(path, sha256) exactly, and every refusal (path out of FOLDER, unknown class, changed file)
moves nothing."""

from __future__ import annotations

import csv
import os

import pytest

from fastcore_cv.clean import apply as clean_apply
from fastcore_cv.clean.inventory import CleanError
from fastcore_cv.clean.journal import Journal
from fastcore_cv.clean.session import CleanSession


def _items(session) -> dict[str, dict]:
    return {i["path"]: i for i in session.items()}


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_decisions_survive_reopening_without_rescoring(fresh, models):
    s = fresh.session
    scores = fresh.root / ".fastcore-cv" / "scores.json"
    stamp = scores.stat().st_mtime_ns
    error, true = fresh.errors[0]
    s.decide({"path": error, "action": "relabel", "label": true})
    s.decide({"path": fresh.exact[1], "action": "delete"})
    s.decide({"path": "valid/brick/000.png", "action": "keep"})
    s.decide({"path": fresh.exact[1], "action": "keep"})  # the last decision counts
    again = _items(CleanSession(fresh.root, models.checkpoint))
    assert again[error]["decision"]["action"] == "relabel"
    assert again[error]["decision"]["label"] == true
    assert again[fresh.exact[1]]["decision"]["action"] == "keep"
    assert again["valid/brick/000.png"]["decision"]["action"] == "keep"
    assert sum(i["decision"] is not None for i in again.values()) == 3
    assert scores.stat().st_mtime_ns == stamp  # the cached scores were reused


def test_apply_moves_files_and_undo_restores_every_hash(fresh, helpers):
    s, root = fresh.session, fresh.root
    before = helpers.file_hashes(root)
    error, true = fresh.errors[0]
    s.decide({"path": error, "action": "relabel", "label": true})
    s.decide({"path": fresh.exact[1], "action": "delete"})
    s.decide({"path": "train/brick/000.png", "action": "relabel", "label": "grass"})  # a clash
    s.decide({"path": "train/brick/001.png", "action": "keep"})
    result = s.apply()
    assert result["deleted"] == 1 and result["relabelled"] == 2
    name = os.path.basename(error)
    split = error.split("/")[0]
    assert (root / split / true / name).is_file() and not (root / error).exists()
    assert (root / ".fastcore-cv/trash" / fresh.exact[1]).is_file()
    assert (root / "train/grass/000-1.png").is_file() and (root / "train/grass/000.png").is_file()
    rows = {r["path"]: r for r in _csv_rows(root / "cleaned.csv")}
    assert len(rows) == len(before) - 1
    assert rows[f"{split}/{true}/{name}"]["label"] == true
    assert rows["train/grass/000-1.png"]["label"] == "grass"
    assert fresh.exact[1] not in rows and rows["valid/brick/000.png"]["is_valid"] == "True"
    now = _items(s)
    assert now[f"{split}/{true}/{name}"]["label"] == true and fresh.exact[1] not in now
    assert now["train/brick/001.png"]["decision"]["action"] == "keep"  # a keep stays
    assert s.undo() == {"undone": 1, "moved_back": 3}
    assert helpers.file_hashes(root) == before  # the same files, count and bytes, as before
    assert not (root / "cleaned.csv").exists()
    assert _items(s)[error]["decision"]["action"] == "relabel"  # pending again
    with pytest.raises(CleanError) as e:
        s.undo()
    assert e.value.status == 409


def test_second_apply_and_undo_bring_back_the_first_cleaned_csv(fresh, helpers):
    s, root = fresh.session, fresh.root
    before = helpers.file_hashes(root)
    s.decide({"path": fresh.exact[1], "action": "delete"})
    s.apply()
    first = (root / "cleaned.csv").read_bytes()
    s.decide({"path": fresh.resized[1], "action": "delete"})
    s.apply()
    assert (root / "cleaned.csv").read_bytes() != first
    s.undo()
    assert (root / "cleaned.csv").read_bytes() == first
    s.undo()
    assert helpers.file_hashes(root) == before


@pytest.mark.parametrize(
    ("decision", "status", "says"),
    [
        ({"path": "../outside.png", "action": "delete"}, 403, "leads out"),
        ({"path": "/etc/hostname", "action": "delete"}, 403, "absolute"),
        ({"path": "train/brick/link.png", "action": "delete"}, 403, "link"),
        ({"path": "train/brick/nope.png", "action": "delete"}, 404, "not a scored"),
        ({"path": "train/brick/000.png", "action": "relabel", "label": "cat"}, 422, "'cat'"),
        ({"path": "train/brick/000.png", "action": "burn"}, 422, "burn"),
        ({"path": 3, "action": "delete"}, 422, "path"),
    ],
)
def test_bad_decisions_are_refused_naming_the_problem(fresh, helpers, decision, status, says):
    outside = fresh.root.parent / "outside.png"
    outside.write_bytes(b"x")
    (fresh.root / "train/brick/link.png").symlink_to(outside)
    before = helpers.file_hashes(fresh.root)
    with pytest.raises(CleanError) as e:
        fresh.session.decide(decision)
    assert e.value.status == status and says in str(e.value)
    assert all(i["decision"] is None for i in fresh.session.items())
    assert helpers.file_hashes(fresh.root) == before


def test_a_file_changed_since_scoring_is_refused_and_nothing_moves(fresh, helpers):
    s, root = fresh.session, fresh.root
    s.decide({"path": fresh.exact[1], "action": "delete"})
    s.decide({"path": "train/grass/001.png", "action": "relabel", "label": "brick"})
    changed = root / "train/grass/001.png"
    data = bytearray(changed.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    stat = changed.stat()
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old time
    before = helpers.file_hashes(root)
    with pytest.raises(CleanError) as e:
        s.apply()
    assert e.value.status == 409 and "train/grass/001.png" in str(e.value)
    assert helpers.file_hashes(root) == before and not (root / "cleaned.csv").exists()
    with pytest.raises(CleanError) as e:
        s.decide({"path": "train/grass/001.png", "action": "keep"})
    assert e.value.status == 409


def test_an_apply_cut_short_is_undone_exactly(fresh, helpers, monkeypatch, models):
    s, root = fresh.session, fresh.root
    before = helpers.file_hashes(root)
    s.decide({"path": fresh.exact[1], "action": "delete"})
    s.decide({"path": fresh.resized[1], "action": "delete"})
    real, calls = clean_apply._rename, []

    def dies_on_the_second(folder, move):  # a crash between two moves
        calls.append(move)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(folder, move)

    monkeypatch.setattr(clean_apply, "_rename", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        s.apply()
    monkeypatch.setattr(clean_apply, "_rename", real)
    reopened = CleanSession(root, models.checkpoint)  # files moved: the journal says where
    assert reopened.undo()["moved_back"] == 1
    assert helpers.file_hashes(root) == before


def test_journal_skips_a_torn_line(tmp_path):
    j = Journal(tmp_path)
    j.append({"type": "decision", "path": "a.png", "action": "keep"})
    with open(j.path, "ab") as f:
        f.write(b'{"type": "decision", "path": "b.p')  # a crash mid-line
    j.append({"type": "decision", "path": "c.png", "action": "delete"})
    assert [r["path"] for r in j.records()] == ["a.png", "c.png"]


def test_loaders_ignore_the_trash_and_train_from_cleaned_csv(fresh):
    from fastcore_cv.vision import ImageDataLoaders

    s, root = fresh.session, fresh.root
    error, true = fresh.errors[0]
    s.decide({"path": fresh.exact[1], "action": "delete"})
    s.decide({"path": error, "action": "relabel", "label": true})
    s.decide({"path": fresh.corrupt, "action": "delete"})
    s.apply()
    assert (root / ".fastcore-cv/trash").is_dir()
    folder = ImageDataLoaders.from_folder(root, size=32, bs=8, augment=False)
    assert folder.classes == ["brick", "grass", "gravel"]
    items = [str(p) for p in folder.train_ds.items + folder.valid_ds.items]
    assert not [p for p in items if ".fastcore-cv" in p]
    dls = ImageDataLoaders.from_csv(root, "cleaned.csv", size=32, bs=8, augment=False)
    rows = _csv_rows(root / "cleaned.csv")
    assert len(dls.train_ds) + len(dls.valid_ds) == len(rows)
    assert len(dls.valid_ds) == sum(r["is_valid"] == "True" for r in rows)
    split, name = error.split("/")[0], os.path.basename(error)
    labelled = dict(
        zip(
            dls.valid_ds.items + dls.train_ds.items,
            list(dls.valid_ds.labels) + list(dls.train_ds.labels),
            strict=True,
        )
    )
    assert dls.classes[int(labelled[root / split / true / name])] == true
    x, y = dls.one_batch()
    assert tuple(x.shape) == (8, 3, 32, 32)

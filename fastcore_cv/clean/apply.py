"""Applying decisions by moving files, never unlinking them, and undoing the last apply.

delete -> ``FOLDER/.fastcore-cv/trash/<path>``; relabel -> the sibling class folder
(``FOLDER/<class>/`` or ``FOLDER/<split>/<class>/``); a name already taken gets ``-1``,
``-2``... and nothing is overwritten. Every check (path inside FOLDER, class known, file
unchanged since it was scored) runs for every decision before the first move, so a refusal
moves nothing. Each move is journalled before ("planned") and after ("done"); undo reverses
the done moves of the last apply in reverse order, so it also finishes a crashed apply's undo.
``cleaned.csv`` (path,label[,is_valid]) is written atomically after the moves; an older one is
moved aside first and moved back by undo.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fastcore_cv.clean import STATE_DIR
from fastcore_cv.clean.inventory import CleanError, Item, class_folder, fingerprint, inside
from fastcore_cv.clean.journal import Journal
from fastcore_cv.output_files import atomic_path

CLEANED = "cleaned.csv"
TRASH = f"{STATE_DIR}/trash"


@dataclass(frozen=True)
class Move:
    """One rename, both paths relative to FOLDER (POSIX)."""

    src: str
    dst: str


def _free_name(folder: Path, rel: str, taken: set[str]) -> str:
    """``rel``, or ``stem-1.ext``, ``stem-2.ext``...: the first name neither on disk nor
    planned."""
    pure = PurePosixPath(rel)
    candidate, n = rel, 0
    while candidate in taken or os.path.lexists(folder / candidate):
        n += 1
        candidate = str(pure.with_name(f"{pure.stem}-{n}{pure.suffix}"))
    taken.add(candidate)
    return candidate


def check_unchanged(folder: Path, item: Item) -> None:
    """CleanError 409 naming the file if it is gone or differs from when it was scored."""
    path = folder / item.path
    try:
        size, mtime, digest = fingerprint(path)
    except FileNotFoundError:
        raise CleanError(f"{item.path}: the file is gone since it was scored", 409) from None
    if (size, digest) != (item.size, item.sha256) or mtime != item.mtime_ns:
        raise CleanError(
            f"{item.path}: the file changed on disk since it was scored (size, time or "
            "content); score the folder again before applying",
            409,
        )


def check_decision(
    folder: Path, items: dict[str, Item], classes: list[str], decision: dict[str, Any]
) -> Item:
    """The Item a decision is about, after checking its path, action and class (4xx)."""
    rel = decision.get("path")
    inside(folder, rel)
    item = items.get(rel)
    if item is None:
        raise CleanError(f"path: {rel!r} is not a scored image of this folder", 404)
    action = decision.get("action")
    if action not in ("keep", "delete", "relabel"):
        raise CleanError(f"action: expected keep, delete or relabel, got {action!r}", 422)
    if action == "relabel" and decision.get("label") not in classes:
        raise CleanError(
            f"label: {decision.get('label')!r} is not a class of this folder (classes: "
            f"{', '.join(classes)})",
            422,
        )
    return item


def plan(
    folder: Path, items: dict[str, Item], classes: list[str], decisions: list[dict[str, Any]]
) -> list[Move]:
    """The moves for ``decisions`` (keep and same-class relabels move nothing), after every
    check has passed for every one of them."""
    moves, taken = [], set()
    for d in decisions:
        item = check_decision(folder, items, classes, d)
        check_unchanged(folder, item)
        if d["action"] == "delete":
            dst = f"{TRASH}/{item.path}"
        elif d["action"] == "relabel" and d["label"] != item.label:
            target = class_folder(folder, item, d["label"]).relative_to(folder)
            dst = (target / PurePosixPath(item.path).name).as_posix()
        else:
            continue
        inside(folder, dst, "destination")
        moves.append(Move(item.path, _free_name(folder, dst, taken)))
    return moves


def _rename(folder: Path, move: Move) -> None:
    src, dst = folder / move.src, folder / move.dst
    if os.path.lexists(dst):  # checked again at the last moment: never overwrite
        raise CleanError(f"{move.dst}: already exists; nothing overwritten", 409)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)


def execute(
    folder: Path,
    journal: Journal,
    apply_id: int,
    moves: list[Move],
    decisions: list[dict[str, Any]],
    rows: list[tuple[str, str, str]],
) -> None:
    """Journal the apply, make the moves (each journalled before and after), write
    cleaned.csv from ``rows`` (path, label, split), journal the end."""
    if (folder / CLEANED).exists():
        moves = [*moves, Move(CLEANED, f"{STATE_DIR}/cleaned-before-apply-{apply_id}.csv")]
    journal.append(
        {
            "type": "apply",
            "id": apply_id,
            "state": "begin",
            "decisions": decisions,
            "moves": [[m.src, m.dst] for m in moves],
        }
    )
    for m in moves:
        journal.append(
            {"type": "move", "apply": apply_id, "src": m.src, "dst": m.dst, "state": "planned"}
        )
        _rename(folder, m)
        journal.append(
            {"type": "move", "apply": apply_id, "src": m.src, "dst": m.dst, "state": "done"}
        )
    write_cleaned_csv(folder / CLEANED, rows)
    journal.append({"type": "apply", "id": apply_id, "state": "done", "wrote": CLEANED})


def write_cleaned_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """path,label (and is_valid when the folder has train/ and valid/), atomically."""
    split = any(s for _, _, s in rows)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "is_valid"] if split else ["path", "label"])
        for rel, label, s in rows:
            w.writerow([rel, label, str(s == "valid")] if split else [rel, label])


def undo(folder: Path, journal: Journal, apply_id: int, done: list[Move], wrote_csv: bool) -> None:
    """Reverse ``done`` (the moves of apply ``apply_id`` that happened) in reverse order,
    after checking every one can be reversed (409 otherwise, nothing moved)."""
    back = [Move(m.dst, m.src) for m in reversed(done)]
    if wrote_csv and (folder / CLEANED).exists():
        back.insert(0, Move(CLEANED, f"{STATE_DIR}/cleaned-undone-apply-{apply_id}.csv"))
    for m in back:
        if not os.path.lexists(folder / m.src):
            raise CleanError(f"undo: {m.src} is gone; nothing moved", 409)
        if m.dst != CLEANED and not m.dst.startswith(STATE_DIR) and os.path.lexists(folder / m.dst):
            raise CleanError(f"undo: {m.dst} is taken by another file; nothing moved", 409)
    journal.append({"type": "undo", "apply": apply_id, "state": "begin"})
    for m in back:
        if m.src == CLEANED:
            taken: set[str] = set()
            m = Move(m.src, _free_name(folder, m.dst, taken))
        journal.append(
            {"type": "move", "undo": apply_id, "src": m.src, "dst": m.dst, "state": "planned"}
        )
        _rename(folder, m)
        journal.append(
            {"type": "move", "undo": apply_id, "src": m.src, "dst": m.dst, "state": "done"}
        )
    journal.append({"type": "undo", "apply": apply_id, "state": "done"})

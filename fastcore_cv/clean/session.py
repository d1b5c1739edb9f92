"""One folder being cleaned: its scored items, the decisions so far and the applies, all
rebuilt from ``FOLDER/.fastcore-cv/`` (scores.json + the journal) whenever it is opened.

Scoring (slow: the body runs once per file) is cached in ``scores.json`` with the model's
and the files' fingerprints; a reopened folder whose files are where the journal says they
should be reuses it, so a killed server comes back with the same list and every decision.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from fastcore_cv.clean import STATE_DIR, apply
from fastcore_cv.clean.inventory import CleanError, Item, model_fingerprint, scan
from fastcore_cv.clean.journal import Journal
from fastcore_cv.output_files import atomic_path

SCORES = "scores.json"
ISSUES = ("label", "duplicate", "undecodable")


@dataclass
class View:
    """The journal replayed over the scored items: where each file is now, what is pending."""

    items: dict[str, Item] = field(default_factory=dict)  # current path -> Item
    origin: dict[str, str] = field(default_factory=dict)  # current path -> path when scored
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> decision
    applies: list[dict[str, Any]] = field(default_factory=list)


def replay(scored: list[Item], records: list[dict[str, Any]]) -> View:
    """The state the journal ``records`` describe, starting from the ``scored`` items."""
    view = View({i.path: i for i in scored}, {i.path: i.path for i in scored})
    trashed: dict[str, tuple[Item, str]] = {}
    by_id: dict[int, dict[str, Any]] = {}
    for rec in records:
        kind = rec["type"]
        if kind == "decision":
            view.pending[rec["path"]] = rec
        elif kind == "apply" and rec["state"] == "begin":
            entry = {
                "id": rec["id"],
                "decisions": rec["decisions"],
                "done": [],
                "finished": False,
                "undone": False,
            }
            by_id[rec["id"]] = entry
            view.applies.append(entry)
            for d in rec["decisions"]:
                if d["action"] != "keep":
                    view.pending.pop(d["path"], None)
        elif kind == "apply" and rec["state"] == "done":
            by_id[rec["id"]]["finished"] = True
        elif kind == "move" and rec["state"] == "done":
            if "apply" in rec:
                by_id[rec["apply"]]["done"].append(apply.Move(rec["src"], rec["dst"]))
            _move(view, trashed, rec["src"], rec["dst"])
        elif kind == "undo" and rec["state"] == "done":
            entry = by_id[rec["apply"]]
            entry["undone"] = True
            for d in entry["decisions"]:
                if d["action"] != "keep":
                    view.pending[d["path"]] = d
    return view


def _move(view: View, trashed: dict[str, tuple[Item, str]], src: str, dst: str) -> None:
    if src in view.items:
        item, origin = view.items.pop(src), view.origin.pop(src)
    elif src in trashed:
        item, origin = trashed.pop(src)
    else:
        return  # cleaned.csv moved aside or back
    moved = replace(item, path=dst, label=PurePosixPath(dst).parent.name)
    if dst.startswith(apply.TRASH + "/"):
        trashed[dst] = (moved, origin)
    else:
        view.items[dst], view.origin[dst] = moved, origin


class CleanSession:
    """Score ``folder`` with ``model`` (or reuse the cached scores), then serve its state.

    ``model``: a path to a checkpoint or an .onnx file; None reuses scores.json (for
    ``--apply`` without a model), else CleanError."""

    def __init__(
        self,
        folder: str | os.PathLike,
        model: str | os.PathLike | None = None,
        *,
        folds: int = 5,
        seed: int = 42,
        threads: int = 1,
    ) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.exists():
            raise CleanError(f"FOLDER: {folder} does not exist")
        if not self.folder.is_dir():
            raise CleanError(f"FOLDER: {folder} is not a folder")
        self.journal = Journal(self.folder)
        self._lock = threading.Lock()
        classes, now = scan(self.folder)
        cached = self._cached(model, now)
        if cached is None:
            if model is None:
                raise CleanError(
                    f"{self.folder}: no scores yet; run `fastcore-cv clean "
                    f"{folder} --model M` first"
                )
            from fastcore_cv.clean.pipeline import score_folder

            cached = score_folder(
                self.folder, model, classes, now, folds=folds, seed=seed, threads=threads
            )
            with atomic_path(self.folder / STATE_DIR / SCORES) as tmp:
                tmp.write_text(json.dumps(cached) + "\n")
        self.meta = cached
        self.classes = cached["classes"]
        self.scored = [Item(**i["file"]) for i in cached["items"]]
        self.info = {i["file"]["path"]: i for i in cached["items"]}

    def _cached(self, model: str | os.PathLike | None, now: list[Item]) -> dict | None:
        """scores.json if it was made with this model and the files are where the journal
        says (same paths, sizes, times); else None (score again)."""
        path = self.folder / STATE_DIR / SCORES
        try:
            cached = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if model is not None and cached.get("model") != model_fingerprint(model):
            return None
        view = replay([Item(**i["file"]) for i in cached["items"]], self.journal.records())
        expect = {(p, i.size, i.mtime_ns) for p, i in view.items.items()}
        return cached if expect == {(i.path, i.size, i.mtime_ns) for i in now} else None

    def view(self) -> View:
        return replay(self.scored, self.journal.records())

    def items(self) -> list[dict[str, Any]]:
        """Every file now in the folder, most suspect first, with its decision so far."""
        view = self.view()
        out = []
        for path, item in view.items.items():
            info = self.info[view.origin[path]]
            out.append(
                {
                    **{
                        k: info[k]
                        for k in (
                            "predicted",
                            "probability",
                            "score",
                            "issue",
                            "duplicate_of",
                            "given_probability",
                        )
                    },
                    "path": path,
                    "label": item.label,
                    "split": item.split,
                    "scored_label": info["file"]["label"],
                    "decision": _public(view.pending.get(path)),
                }
            )
        out.sort(key=lambda i: (i["issue"] is None, -i["score"], i["path"]))
        return out

    def decide(self, decision: Any) -> dict[str, Any]:
        """Check and journal one decision (fsync'd before this returns)."""
        if not isinstance(decision, dict):
            raise CleanError("body: expected a JSON object {path, action, label}", 422)
        with self._lock:
            view = self.view()
            item = apply.check_decision(self.folder, view.items, self.classes, decision)
            apply.check_unchanged(self.folder, item)
            rec = {
                "type": "decision",
                "path": item.path,
                "action": decision["action"],
                "label": decision.get("label") if decision["action"] == "relabel" else None,
                "sha256": item.sha256,
            }
            return _public(self.journal.append(rec))

    def apply(self) -> dict[str, Any]:
        """Apply the pending delete/relabel decisions (moves), write cleaned.csv."""
        with self._lock:
            view = self.view()
            decisions = [d for d in view.pending.values() if d["action"] != "keep"]
            moves = apply.plan(self.folder, view.items, self.classes, decisions)
            apply_id = 1 + max((a["id"] for a in view.applies), default=0)
            moved = {m.src: m.dst for m in moves}
            rows = []
            for path, item in sorted(view.items.items()):
                dst = moved.get(path, path)
                if not dst.startswith(apply.TRASH + "/"):
                    rows.append((dst, PurePosixPath(dst).parent.name, item.split))
            apply.execute(
                self.folder,
                self.journal,
                apply_id,
                moves,
                [_public(d) for d in decisions],
                sorted(rows),
            )
            deleted = sum(m.dst.startswith(apply.TRASH + "/") for m in moves)
            return {
                "apply": apply_id,
                "moved": len(moves),
                "deleted": deleted,
                "relabelled": len(moves) - deleted,
                "csv": apply.CLEANED,
                "kept": len(rows),
            }

    def undo(self) -> dict[str, Any]:
        """Reverse the last apply not yet undone (409 if there is none)."""
        with self._lock:
            view = self.view()
            last = next((a for a in reversed(view.applies) if not a["undone"]), None)
            if last is None:
                raise CleanError("undo: nothing has been applied (or it was undone)", 409)
            apply.undo(self.folder, self.journal, last["id"], last["done"], last["finished"])
            return {"undone": last["id"], "moved_back": len(last["done"])}

    def summary(self) -> dict[str, Any]:
        counts = {k: 0 for k in ISSUES}
        for i in self.info.values():
            if i["issue"]:
                counts[i["issue"]] += 1
        return {
            "folder": str(self.folder),
            "classes": self.classes,
            "files": len(self.info),
            "issues": counts,
            **{k: self.meta[k] for k in ("features", "honest", "folds", "seconds", "model_name")},
        }


def _public(decision: dict[str, Any] | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {k: decision.get(k) for k in ("path", "action", "label", "time")}

"""The append-only journal: ``FOLDER/.fastcore-cv/journal.jsonl``, one JSON object a line.

Each record is one ``write`` of a whole line to a file opened with O_APPEND, then fsync'd
before the call returns, so a decision the page was told about survives closing the page,
killing the server or a power cut. A last line cut short by a crash (no newline, or not
JSON) is ignored when reading. Records: ``decision`` (path, action, label, sha256),
``apply`` (id, state "begin"/"done"), ``move`` (apply id, src, dst, state "planned"/"done"),
``undo`` (apply id, state "begin"/"done").
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastcore_cv.clean import STATE_DIR

NAME = "journal.jsonl"


class Journal:
    """Append records to, and read them back from, one folder's journal (thread-safe)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / STATE_DIR / NAME
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``record`` (with its time) as one line and fsync it; returns the record."""
        record = {**record, "time": round(time.time(), 3)}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                self._heal(fd)
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"journal: short write to {self.path}")
                os.fsync(fd)
            finally:
                os.close(fd)
        return record

    def _heal(self, fd: int) -> None:
        """A line cut short by a crash must not swallow the next one: end it first."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in order (a torn or garbled line is skipped)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for raw in data.split(b"\n"):
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and "type" in rec:
                out.append(rec)
        return out

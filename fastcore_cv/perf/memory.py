"""Resident memory of a process and its children, read from /proc (Linux): the figure the
load and abuse benchmarks watch, so that a leak shows as growth over thousands of requests.
Also which processes of a group are still running (``ServerProcess.stop`` waits on it)."""

from __future__ import annotations

import os
from pathlib import Path


def process_state(pid: int) -> tuple[str, int, int] | None:
    """(state letter, parent pid, process group) of ``pid`` from /proc/<pid>/stat, or None if
    there is no such process. State "Z" (zombie) or "X" means it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no such process, or it exited while we looked
        return None
    state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]  # the name in (...) may hold spaces
    return state, int(ppid), int(pgrp)


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process in /proc now."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (found := process_state(int(entry.name))) is not None:
            out.append((int(entry.name), *found))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now (uvicorn's worker processes)."""
    children: dict[int, list[int]] = {}
    for p, _state, ppid, _pgrp in _processes():
        children.setdefault(ppid, []).append(p)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def running_in_group(pgid: int) -> list[int]:
    """Processes of the group ``pgid`` that have not exited (zombies have: an orphan's zombie
    stays until init reaps it, which a container's init may never do)."""
    return [p for p, state, _ppid, pgrp in _processes() if pgrp == pgid and state not in "ZX"]


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of ``pid`` and its descendants, summed; 0 once they are gone.
    Pages shared between processes count once per process, as ``ps`` shows them."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total

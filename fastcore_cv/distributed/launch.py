"""``fastcore-cv train --nproc N`` on one machine: N rank processes with the variables
torchrun sets (gloo over 127.0.0.1), watched until all end. The first rank to fail stops the
others (SIGTERM, then SIGKILL after ``GRACE_S``) and the launcher exits non-zero naming
it, so a dead rank never leaves the run hanging in a collective."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

GRACE_S = 5.0  # SIGTERM -> SIGKILL
POLL_S = 0.05  # how often the launcher looks at its ranks


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the rendezvous port of rank 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rank_env(base: dict[str, str], rank: int, nproc: int, port: int) -> dict[str, str]:
    """torchrun's variables for ``rank`` of a one-machine run."""
    return {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}  # fmt: skip


def exit_text(code: int) -> str:
    """'exit code 3' or 'signal SIGKILL' for a Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def stop(procs: Sequence[subprocess.Popen], grace: float = GRACE_S) -> None:
    """SIGTERM every running process, SIGKILL what is left after ``grace`` seconds."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(cmd: Sequence[str], nproc: int, env: dict[str, str], name: str = "train") -> int:
    """Run ``cmd`` as ranks 0..nproc-1; 0 when every rank exits 0, else 1 (after stopping
    the others and saying which rank failed on stderr)."""
    if nproc < 1:
        raise ValueError(f"--nproc: expected >= 1, got {nproc}")
    port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        for r in range(nproc):
            procs.append(subprocess.Popen(list(cmd), env=rank_env(env, r, nproc, port)))
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                r, c = failed[0]
                stop(procs)
                print(f"fastcore-cv {name}: error: rank {r} of {nproc} failed ({exit_text(c)}); "
                      "stopped the other ranks", file=sys.stderr, flush=True)  # fmt: skip
                return 1
            if all(c == 0 for c in codes):
                return 0
            running = next(p for p in procs if p.poll() is None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.wait(timeout=POLL_S)
    finally:
        stop(procs)

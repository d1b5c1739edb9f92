"""Which rank this process is, from the variables torchrun (and ``launch``) set, and the
gloo process group with a timeout on every collective, one thread per rank by default."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from fastcore_cv.threads import available_cores, set_num_threads

# Every collective (and the rendezvous) fails after this many seconds instead of hanging
# when a peer is gone; ``FASTCORE_CV_DDP_TIMEOUT`` overrides it. 120 s covers the slowest
# legitimate wait in a run: rank 0's lr_find sweeps while the others wait at the broadcast.
TIMEOUT_S = 120.0
REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankEnv:
    """This process's place in the run (torchrun's variables)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def current(environ: dict[str, str] | None = None) -> RankEnv | None:
    """The RankEnv the environment describes, or None when this is no rank of a run (a
    partial set of the variables is an error naming the missing ones)."""
    env = os.environ if environ is None else environ
    present = [k for k in REQUIRED if k in env]
    if not present:
        return None
    missing = [k for k in REQUIRED if k not in env]
    if missing:
        raise ValueError(f"environment: {present} set but {missing} missing (torchrun sets all)")
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        port = int(env["MASTER_PORT"])
    except ValueError as e:
        raise ValueError(f"environment: a rank variable is not an int ({e})") from None
    if not 0 <= rank < world:
        raise ValueError(f"environment: RANK={rank} outside WORLD_SIZE={world}")
    return RankEnv(rank, world, local, local_world, env["MASTER_ADDR"], port)


def timeout_s() -> float:
    return float(os.environ.get("FASTCORE_CV_DDP_TIMEOUT", TIMEOUT_S))


def threads_per_rank(local_world_size: int) -> int:
    """The thread policy split between the ranks on this machine: cores // ranks, >= 1."""
    return max(1, available_cores() // max(1, local_world_size))


def rank() -> int:
    """This rank (0 when no process group runs)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process prints, saves and exports: rank 0, or no process group."""
    return rank() == 0


def group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(env: RankEnv) -> Iterator[RankEnv]:
    """The gloo group of ``env`` (collectives time out, see TIMEOUT_S), threads set by the
    policy (``FASTCORE_CV_THREADS`` overrides), stdout silenced on ranks > 0."""
    import torch.distributed as dist

    n = int(os.environ.get("FASTCORE_CV_THREADS", threads_per_rank(env.local_world_size)))
    set_num_threads(n)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=timeout_s()),
    )
    try:
        if env.rank == 0:
            yield env
        else:
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                yield env
    finally:
        dist.destroy_process_group()

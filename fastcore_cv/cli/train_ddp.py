"""``fastcore-cv train --nproc N``: the launcher side (distributed/launch.py starts N ranks,
each re-running ``train`` with the same arguments) and the rank side (the gloo group around
``train``, whose learner is then distributed/ddp.py's). ``torchrun ... -m fastcore_cv train``
enters at the rank side directly."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

ARGS_ENV = "FASTCORE_CV_TRAIN_ARGS"  # the parsed flags, as JSON, for the rank processes


def train_ddp(args: argparse.Namespace, train: Callable[[argparse.Namespace], int]) -> int:
    """In a rank (torchrun's variables set): ``train`` inside the process group; else start
    ``args.nproc`` ranks on this machine and wait for them."""
    from fastcore_cv.distributed.env import current, process_group, threads_per_rank

    env = current()
    if env is not None:
        if getattr(args, "nproc", 1) not in (1, env.world_size):
            print(f"fastcore-cv train: --nproc {args.nproc} ignored: the launcher says "
                  f"WORLD_SIZE={env.world_size}", file=sys.stderr)  # fmt: skip
        with process_group(env):
            return train(args)
    from fastcore_cv.distributed.launch import launch

    payload = {k: v for k, v in vars(args).items() if k != "run"}
    child = {**os.environ, ARGS_ENV: json.dumps(payload), "PYTHONUNBUFFERED": "1"}
    child.setdefault("OMP_NUM_THREADS", str(threads_per_rank(args.nproc)))
    return launch([sys.executable, "-m", "fastcore_cv.cli.train_ddp"], args.nproc, child)


def main() -> int:
    """A rank started by ``train_ddp``: the launcher's flags, then ``train``."""
    from fastcore_cv.cli.train import _train

    return _train(argparse.Namespace(**json.loads(os.environ[ARGS_ENV])))


if __name__ == "__main__":
    sys.exit(main())

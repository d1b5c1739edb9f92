"""Data-parallel training, measured on this machine: per-rank throughput of the whole-model
DDP step at 1 and 2 ranks (gloo, 127.0.0.1, one thread per rank), and the gradient
allreduce of EfficientNet-Lite0's parameters on 2 ranks (bytes and seconds per step).

Writes the "Data-parallel training" section of RESULTS.md (~1-3 min on 2 cores).
On 2 cores two ranks cannot be faster than one process with 2 threads: what is measurable
here is each rank's speed, the time in the allreduce, and the global batch they make.
Usage: python bench/ddp_measure.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

SECTION = "Data-parallel training"
SIZE, BS = 128, 16  # per-rank batch; the global batch is BS x ranks
CLASSES = 1000  # the ImageNet model: the parameter count the issue cites (4.7 M)


def _rank(rank: int, world: int, port: int, steps: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import fastcore_cv
    from fastcore_cv.vision.models import build_arch, channels_last

    fastcore_cv.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))  # fmt: skip
    torch.manual_seed(0)
    model = build_arch("efficientnet_lite0", False, CLASSES)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(BS, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(0, CLASSES, (BS,), generator=gen)
    times = []
    with channels_last(model):
        ddp = DistributedDataParallel(model)
        for i in range(steps + 2):  # 2 warm-up steps
            dist.barrier()
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(ddp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:
                times.append(time.perf_counter() - t)
    comm = []
    if world > 1:  # the gradient allreduce alone: one flat float32 buffer per step
        flat = torch.randn(n_params)
        for i in range(steps + 2):
            dist.barrier()
            t = time.perf_counter()
            dist.all_reduce(flat)
            if i >= 2:
                comm.append(time.perf_counter() - t)
    if rank == 0:
        Path(out).write_text(repr((n_params, times, comm)))
    dist.destroy_process_group()


def measure(world: int, steps: int) -> tuple[int, list[float], list[float]]:
    import torch.multiprocessing as mp

    from fastcore_cv.distributed.launch import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r0")
        mp.spawn(_rank, args=(world, free_port(), steps, out), nprocs=world, join=True)
        import ast

        return ast.literal_eval(Path(out).read_text())


def main(quick: bool) -> str:
    steps = 2 if quick else 6
    n1, t1, _ = measure(1, steps)
    print("1 rank s/step:", t1, flush=True)
    n2, t2, comm = measure(2, steps)
    print("2 ranks s/step:", t2, "allreduce s:", comm, flush=True)
    s1, s2, c = statistics.median(t1), statistics.median(t2), statistics.median(comm)
    nbytes = 4 * n2
    load = os.getloadavg()[1]
    rows = [
        "| ranks | threads per rank | per-rank batch | global batch | s/step (median) | "
        "per-rank img/s | global img/s |",
        "|---|---|---|---|---|---|---|",
        f"| 1 | 1 | {BS} | {BS} | {s1:.3g} | {BS / s1:.1f} | {BS / s1:.1f} |",
        f"| 2 | 1 | {BS} | {2 * BS} | {s2:.3g} | {BS / s2:.1f} | {2 * BS / s2:.1f} |",
    ]
    ring = 2 * (2 - 1) / 2 * nbytes  # bytes each rank sends in a ring allreduce
    lines = [
        f"Whole-model training step (forward, backward, DDP gradient allreduce, SGD step) of "
        f"EfficientNet-Lite0 ({CLASSES} classes) at {SIZE} px, random inputs, channels_last, "
        "gloo on 127.0.0.1, torch.multiprocessing.spawn; 2 warm-up steps, then "
        f"{steps} timed steps. Load average (5 min) at the end: {load:.1f} on 2 cores "
        "shared with other jobs: re-run quietly before quoting.",
        "",
        *rows,
        "",
        f"EfficientNet-Lite0 parameters: {n2:,} ({n2 / 1e6:.2f} M)",
        f"Bytes allreduced per step (float32 gradients): {nbytes:,} ({nbytes / 1e6:.1f} MB)",
        f"Seconds per allreduce (gloo, 2 ranks, 127.0.0.1, median of {len(comm)}): {c:.4f} s "
        f"({nbytes / c / 1e9:.2f} GB/s of gradient)",
        f"Allreduce share of the 2-rank step: {100 * c / s2:.1f}%",
        f"Per-rank slowdown, 2 ranks vs 1 (both 1 thread): {s2 / s1:.2f}x (two ranks share "
        "2 cores with the other jobs, plus the allreduce)",
        "",
        "On paper (ring allreduce: each rank sends and receives 2(N-1)/N x the gradient bytes "
        f"per step, {ring / 1e6:.1f} MB at N=2, -> {2 * nbytes / 1e6:.1f} MB as N grows): on "
        f"10 GbE (~1.2 GB/s) that is ~{2 * nbytes / 1.2e9 * 1e3:.0f} ms per step whatever N "
        f"is, against {s1:.2g} s of compute per {BS}-image step on one core here "
        f"({100 * (2 * nbytes / 1.2e9) / s1:.1f}% of it), so the step stays compute-bound "
        "until a rank's compute per step falls to tens of ms (a GPU, or a tiny per-rank "
        "batch). The global batch grows as ranks x per-rank batch: fine_tune's LRs "
        "(learner/fine_tune.py) were measured at --bs 32 global, so `--bs` in "
        "`train --nproc` is the global batch, split between the ranks. One epoch of 1 "
        f"million images at {BS / s1:.0f} img/s per core: {1e6 / (BS / s1) / 3600:.0f} "
        "core-hours at this size, divided by the ranks' cores.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    quick = "--quick" in sys.argv[1:]
    body = main(quick)
    print(body)
    if not quick:
        replace_section(SECTION, body, "python bench/ddp_measure.py")

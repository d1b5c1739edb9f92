"""``warmup``, ``tour`` and ``demo``: compile the kernels, walk through their maths, and run the
whole lesson path on the embedded digits."""

from __future__ import annotations

import argparse
import time

from fastcore_cv import demo as lesson_demo
from fastcore_cv.cli.common import one_line_errors, positive
from fastcore_cv.output_files import check_writable


def _warmup(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from fastcore_cv import kernels

    timings = {"import fastcore_cv.kernels": time.perf_counter() - start, **kernels.warmup()}
    width = max(len(name) for name in timings)
    for name, seconds in timings.items():
        print(f"  {name:<{width}}  {seconds:7.2f} s")
    print(f"compiled or loaded every kernel in {time.perf_counter() - start:.1f} s")
    print("(a second run loads them from Numba's cache; see README 'Compile cost')")
    return 0


def _tour(args: argparse.Namespace) -> int:
    from fastcore_cv import tour

    return tour.run(quick=args.quick, out=args.out)


@one_line_errors("demo")
def _demo(args: argparse.Namespace) -> int:
    check_writable(args.out, "--out", folder=True)
    lesson_demo.run(args.out, epochs=args.epochs, seed=args.seed, latency_runs=args.latency_runs)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``warmup``, ``demo`` and ``tour``."""
    positive_int = positive(int)
    warm = sub.add_parser("warmup", help="compile every Numba kernel once (then cached)")
    warm.set_defaults(run=_warmup)
    demo = sub.add_parser(
        "demo", help="the whole path on the embedded digits: folder -> fine-tune -> ONNX -> predict"
    )
    demo.add_argument("--out", default=lesson_demo.OUT, help="plots, models, report (%(default)s)")
    demo.add_argument("--epochs", type=positive_int, default=lesson_demo.EPOCHS,
                      help="unfrozen epochs (%(default)s)")  # fmt: skip
    demo.add_argument("--seed", type=int, default=lesson_demo.SEED,
                      help="split and training seed (%(default)s)")  # fmt: skip
    demo.add_argument("--latency-runs", type=positive_int, default=lesson_demo.LATENCY_RUNS,
                      help="timed calls per latency row (%(default)s)")  # fmt: skip
    demo.set_defaults(run=_demo)
    tour = sub.add_parser("tour", help="the kernel tour: each kernel's maths, accuracy and speed")
    tour.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    tour.add_argument("--out", default=None,
                      help="also run the diagnosis gallery; its plots go here")  # fmt: skip
    tour.set_defaults(run=_tour)

"""The command line, thin over the library: ``fastcore-cv COMMAND`` or ``python -m fastcore_cv``.

One entry point (``main``); a module per family of commands, each adding its own subcommands:
``lesson`` (warmup, demo, tour), ``train`` (train, lr-find), ``deploy`` (export, quantize,
predict, serve), ``evaluate`` and ``bench``. Exit codes: see ``fastcore_cv.cli.common``.

Registering the commands imports no torch and no Numba (each command imports what it needs
when it runs), so the inference-only install runs predict/evaluate/serve, and a command that
needs the [train] extra says so in one line (``common.missing_extra``).
"""

from __future__ import annotations

import argparse
import sys

from fastcore_cv.cli import bench, clean, deploy, evaluate, lesson, train
from fastcore_cv.cli.common import missing_extra


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="fastcore-cv",
        description="From a folder of photos to a fast CPU image classifier.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (lesson, train, deploy, evaluate, clean, bench):
        family.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 error, 2 usage error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ModuleNotFoundError as e:  # commands without one_line_errors (warmup, tour)
        return missing_extra(args.command, e)


if __name__ == "__main__":
    sys.exit(main())

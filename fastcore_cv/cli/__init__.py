"""The command line, thin over the library: ``fastcore-cv COMMAND`` or ``python -m fastcore_cv``.

One entry point (``main``); a module per family of commands, each adding its own subcommands:
``lesson`` (warmup, demo, tour), ``train`` (train, lr-find), ``deploy`` (export, quantize,
predict, serve) and ``bench``. Exit codes: see ``fastcore_cv.cli.common``.
"""

from __future__ import annotations

import argparse
import sys

from fastcore_cv.cli import bench, deploy, lesson, train


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="fastcore-cv",
        description="From a folder of photos to a fast CPU image classifier.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (lesson, train, deploy, bench):
        family.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 error, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

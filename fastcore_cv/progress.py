"""One progress display for every long loop (a fit's epochs, downloads, folder predictions):
a tqdm bar on a terminal, a notebook bar in Jupyter (tqdm's ipywidgets bar, or an HTML bar
when ipywidgets is missing), about ten plain lines in logs and under CI (no carriage-return
spam in log files), or nothing.

Plain Python (tqdm is imported only for a bar), so the torch-free Predictor can use it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from fastcore_cv.checks import check_choice

MODES = ("auto", "bar", "plain", "silent")


def in_notebook() -> bool:
    """True inside a running Jupyter kernel (IPython's kernel app), as tqdm.auto decides; a
    terminal IPython, or a process that merely imported ipykernel, is not a notebook."""
    ipython = sys.modules.get("IPython")  # never imported here: a notebook has it loaded
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def interactive(stream: TextIO | None = None) -> bool:
    """True on a terminal or in a notebook kernel, unless the CI variable is set."""
    if os.environ.get("CI"):
        return False
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)()) or in_notebook()


def resolve_mode(mode: str, name: str = "progress", stream: TextIO | None = None) -> str:
    """Check ``mode`` (one of ``MODES``, the error names ``name``); 'auto' becomes 'bar'
    when ``interactive(stream)``, else 'plain'."""
    check_choice(mode, name, MODES)
    if mode != "auto":
        return mode
    return "bar" if interactive(stream) else "plain"


def make_bar(total: int | None, desc: str, unit: str, leave: bool, file: TextIO | None) -> Any:
    """tqdm's widget bar in a notebook (an ``HtmlBar`` without ipywidgets), else tqdm's text
    bar on ``file`` (stderr), exactly as on a terminal."""
    if file is None and in_notebook():
        import tqdm.notebook

        if tqdm.notebook.IProgress is None:  # ipywidgets is not installed
            return HtmlBar(total, desc, unit, leave)
        return tqdm.notebook.tqdm(total=total, desc=desc, unit=unit, leave=leave)
    from tqdm.std import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=file)


class HtmlBar:
    """A notebook progress bar without ipywidgets: one HTML ``<progress>`` output, redrawn in
    place (IPython display handles) at most every ``MIN_SECONDS`` and at the end."""

    MIN_SECONDS = 0.1

    def __init__(self, total: int | None, desc: str, unit: str, leave: bool) -> None:
        from IPython.display import HTML, display

        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.n, self.status, self.shown_at, self._html = 0, "", 0.0, HTML
        self.handle = display(HTML(self.html()), display_id=True)

    def html(self) -> str:
        import html

        total = self.total or 0
        text = f"{self.n}/{total} {self.status or self.unit}" if total else f"{self.n}"
        value = f'value="{self.n}" max="{total}"' if total else ""
        return (
            f'<div class="fastcore-cv-progress">{html.escape(self.desc)} '
            f"<progress {value}></progress> {html.escape(text)}</div>"
        )

    def set_postfix_str(self, status: str, refresh: bool = True) -> None:
        self.status = status

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.shown_at >= self.MIN_SECONDS or self.n == self.total:
            self.shown_at = now
            self.handle.update(self._html(self.html()))

    def close(self) -> None:
        self.handle.update(self._html(self.html() if self.leave else ""))


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
        self.mode = resolve_mode(mode, stream=file)
        self.total, self.desc, self.unit, self.file, self.done = total, desc, unit, file, 0
        self.every = max(1, (total or 0) // 10)
        self.bar: Any = None
        if self.mode == "bar" and total != 0:
            self.bar = make_bar(total, desc, unit, leave, file)

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

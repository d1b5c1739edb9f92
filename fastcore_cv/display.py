"""How the objects a learner looks at show themselves in a notebook: PNG bytes from a plot
(``_repr_png_``) and small HTML tables (``_repr_html_``), without display calls.

Plain Python: matplotlib is never imported here (the plots are drawn by their own modules on
a ``Figure``, Agg canvas, no pyplot state), so the torch-free Predictor can use the HTML part.
"""

from __future__ import annotations

import base64
import html
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_from(plot: Callable[[Path], Any]) -> bytes:
    """The PNG bytes ``plot(path)`` writes (every ``plot*`` method here takes a path and saves
    through ``learner/plots.py`` ``save_figure``); the temporary file is removed."""
    with tempfile.TemporaryDirectory(prefix="fastcore-cv-repr-") as folder:
        path = Path(folder) / "figure.png"
        plot(path)
        data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise ValueError(f"plot: {getattr(plot, '__name__', plot)} did not write a PNG")
    return data


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes, through its own (Agg) canvas."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    """An ``<img>`` holding ``png`` inline (a data: URL), so the HTML needs no file."""
    size = f' width="{int(width)}"' if width else ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}"/>'


def cell(value: object) -> str:
    """One table cell's text: floats to 4 significant digits, everything escaped."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], caption: str | None = None
) -> str:
    """A small HTML table (escaped cells; no styling beyond what Jupyter gives tables)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bar(fraction: float, width_px: int = 120, color: str = "#4c72b0") -> str:
    """A horizontal bar ``fraction`` (0..1) long, drawn with two divs (no image)."""
    f = min(max(float(fraction), 0.0), 1.0)
    inner = f'<div style="width:{f * 100:.1f}%;height:100%;background:{color}"></div>'
    return f'<div style="display:inline-block;width:{width_px}px;height:0.8em;">{inner}</div>'


def finding_html(code: str, message: str, epoch: int | None = None) -> str:
    """One diagnosis as a block: its code in bold, the epoch it points at, the message."""
    where = f" (epoch {epoch})" if epoch is not None else ""
    return (
        f'<div class="fastcore-cv-finding"><b>{html.escape(code)}</b>{html.escape(where)}: '
        f"{html.escape(message)}</div>"
    )


def findings_html(findings: Sequence[Any]) -> str:
    """A list of findings (``learner/diagnose.py``), or the sentence saying there are none."""
    if not findings:
        return '<div class="fastcore-cv-finding">diagnose(): no problem found</div>'
    return "".join(finding_html(f.code, f.message, f.epoch) for f in findings)


def prediction_html(prediction: Any) -> str:
    """A Predictor's answer (``export/predictor.py`` ``Prediction``): the label, whether it is
    accepted at the threshold, and the top k as bars."""
    p = prediction
    verdict = "" if p.accepted else f" (not sure: below the threshold {p.threshold:.2f})"
    rows = [(label, f"{prob:.1%}", bar(prob)) for label, prob in p.top_k]
    body = "".join(
        f"<tr><td>{html.escape(str(label))}</td><td>{pct}</td><td>{b}</td></tr>"
        for label, pct, b in rows
    )
    return (
        f'<div class="fastcore-cv-prediction"><b>{html.escape(str(p.label))}</b> '
        f"{p.probability:.1%}{html.escape(verdict)}, {p.latency_ms:.2f} ms"
        f"<table><thead><tr><th>class</th><th>probability</th><th></th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def interpretation_html(interp: Any, top_k: int = 8) -> str:
    """A ``ClassificationInterpretation`` (``vision/interpret.py``): the confusion matrix, the
    worst items and the per-class report, in one block."""
    rows = [
        (r.name, r.precision, r.recall, r.f1, r.support)
        for r in interp.report()  # fmt: skip
    ]
    report = table(("class", "precision", "recall", "f1", "support"), rows, "per-class report")
    confused = table(("actual", "predicted", "count"), interp.most_confused()[:5], "most confused")
    k = min(top_k, len(interp.losses))
    parts = [
        f"<h4>{html.escape(repr(interp))}</h4>",
        img_tag(png_from(interp.plot_confusion_matrix), "confusion matrix"),
        img_tag(png_from(lambda path: interp.plot_top_losses(k, path)), "top losses"),
        f'<div style="display:flex;gap:2em">{report}{confused}</div>',
    ]
    return "".join(parts)

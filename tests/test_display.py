"""The objects a learner looks at show themselves in a notebook: each ``_repr_png_`` is a real
PNG of a sensible size, each ``_repr_html_`` is well-formed HTML naming what it shows."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import textwrap
from html.parser import HTMLParser

import numpy as np
import torch
from PIL import Image

from fastcore_cv.display import PNG_MAGIC, table
from fastcore_cv.learner.diagnose import Finding, Findings, diagnose
from fastcore_cv.learner.lr_finder import LRFinderResult
from fastcore_cv.learner.recorder import EpochRow, History, Recorder

VOID = {"img", "br", "hr", "meta", "input"}


class TagChecker(HTMLParser):
    """Parses HTML, checking every tag is closed in order; keeps the text and the images."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.images: list[bytes] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            src = dict(attrs)["src"]
            assert src.startswith("data:image/png;base64,")
            self.images.append(base64.b64decode(src.split(",", 1)[1]))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:  # <img .../> ends itself
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(html)
    checker.close()
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    return checker


def text_of(html: str) -> str:
    return " ".join(" ".join(parse(html).text).split())


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    img = Image.open(io.BytesIO(data))
    img.load()  # decodes every pixel: a truncated file fails here
    assert img.format == "PNG"
    return img.size


def sweep() -> LRFinderResult:
    lrs = np.geomspace(1e-6, 1, 60)
    x = np.log10(lrs)
    losses = 2.3 - 2 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -0.5, (x + 0.5) * 8, 0)
    return LRFinderResult(lrs, losses, losses.copy(), stopped_early=False)


def test_lr_finder_result_shows_its_plot_as_png():
    width, height = png_size(sweep()._repr_png_())
    assert (width, height) == (600, 400)  # the plot's 6 x 4 inches at 100 dpi


def test_recorder_shows_the_loss_plot_after_a_fit_and_text_before():
    rec = Recorder()
    assert rec._repr_png_() is None  # nothing recorded: the notebook falls back to text
    rec.begin_fit(["error_rate"])
    for i in range(20):
        rec.log_batch(2.0 / (i + 1), 0.1, 0.9, 0.01)
    rec.log_epoch(EpochRow(0, 0.5, 0.6, {"error_rate": 0.1}, iters=20))
    assert png_size(rec._repr_png_()) == (600, 400)


def test_findings_are_a_list_that_shows_as_html():
    h = History.from_epochs([2.0, 1.9, 1.85], [1.5, 1.45, 1.4])  # train above valid, falling
    found = diagnose(h)
    assert isinstance(found, Findings) and isinstance(found, list) and found == list(found)
    assert [f.code for f in found] and all(isinstance(f, Finding) for f in found)
    text = text_of(found._repr_html_())
    for f in found:
        assert f.code in text and f.message in text
        assert f.code in text_of(f._repr_html_())
    assert "no problem found" in text_of(Findings()._repr_html_())


def test_html_cells_are_escaped():
    html = table(["class"], [["<script>alert(1)</script>"]], caption="a & b")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>alert(1)</script>" in text_of(html)


def test_interpretation_shows_confusion_matrix_top_losses_and_report(tmp_path):
    from fastcore_cv.vision.interpret import ClassificationInterpretation

    classes = ["cat", "dog", "teddy"]
    items = []
    for i in range(6):  # real image files: the top-losses grid shows their thumbnails
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(path)
        items.append(path)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]] * 2)
    targets = torch.tensor([0, 1, 2, 1, 0, 2])  # items 3 and 4 are wrong
    interp = ClassificationInterpretation(probs, targets, classes, items)
    checked = parse(interp._repr_html_())
    text = " ".join(" ".join(checked.text).split())
    assert len(checked.images) == 2  # confusion matrix, top losses
    for png in checked.images:
        w, h = png_size(png)
        assert w >= 300 and h >= 300
    assert "per-class report" in text and "most confused" in text
    assert all(c in text for c in classes) and "error_rate 0.3333" in text


def test_prediction_html_is_torch_and_matplotlib_free():
    """The Predictor's answer renders in a process that never loads torch or matplotlib."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from fastcore_cv.export.predictor import Prediction
        p = Prediction("teddy", 2, 0.61, [("teddy", 0.61), ("grizzly", 0.3)], 4.2,
                       np.array([0.09, 0.3, 0.61]), accepted=False, threshold=0.7)
        print(p._repr_html_())
        print("LOADED", "torch" in sys.modules, "matplotlib" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    html, loaded = out.stdout.rsplit("LOADED", 1)
    assert loaded.split() == ["False", "False"]
    text = text_of(html)
    assert "teddy 61.0%" in text and "grizzly" in text and "30.0%" in text
    assert "not sure: below the threshold 0.70" in text

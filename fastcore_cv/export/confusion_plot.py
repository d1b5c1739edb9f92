"""The confusion matrix as a PNG heat map, drawn with Pillow.

Pillow, not matplotlib: the inference-only install has Pillow already, and matplotlib with its
font tools would add ~75 MB to a 210 MB install (bench/RESULTS.md, "Install sizes") for one
picture. Cells are shaded by the row share (recall), the count is written in each.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fastcore_cv.output_files import atomic_path

LIGHT, DARK = np.array([247, 251, 255]), np.array([8, 48, 107])  # matplotlib's "Blues" ends
MAX_LABEL = 24  # characters of a class name shown


def plot_confusion(
    cm: np.ndarray, classes: list[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Draw ``cm[actual, predicted]`` with its class names into the PNG ``path`` (atomically)."""
    cm = np.asarray(cm)
    n = len(classes)
    if cm.shape != (n, n):
        raise ValueError(f"cm: expected shape ({n}, {n}) for {n} classes, got {cm.shape}")
    cell = max(18, min(48, 900 // max(n, 1)))
    font = ImageFont.load_default(size=max(9, cell // 3))
    small = ImageFont.load_default(size=12)
    names = [c if len(c) <= MAX_LABEL else c[: MAX_LABEL - 1] + "~" for c in classes]
    label_w = max(int(font.getlength(c)) for c in names) + 12
    top = label_w + 40  # column names stand upright above the grid, the title above them
    title = title or "confusion matrix"
    width = max(label_w + 24 + n * cell + 10, int(small.getlength(title)) + 16)
    height = top + n * cell + 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title, fill="black", font=small)
    draw.text((label_w + 24, top - 16), "predicted ->", fill="black", font=small)
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    share = cm / rows
    x0, y0 = label_w + 24, top
    for a in range(n):
        draw.text((label_w + 20, y0 + a * cell + cell // 2), names[a], fill="black", font=font,
                  anchor="rm")  # fmt: skip
        for p in range(n):
            shade = tuple(int(v) for v in LIGHT + (DARK - LIGHT) * share[a, p])
            box = (x0 + p * cell, y0 + a * cell, x0 + (p + 1) * cell - 1, y0 + (a + 1) * cell - 1)
            draw.rectangle(box, fill=shade)
            ink = "white" if share[a, p] > 0.5 else "black"
            centre = (x0 + p * cell + cell // 2, y0 + a * cell + cell // 2)
            draw.text(centre, str(int(cm[a, p])), fill=ink, font=font, anchor="mm")
    for p in range(n):  # column names, written sideways into a strip then turned upright
        strip = Image.new("RGB", (label_w, cell), "white")
        ImageDraw.Draw(strip).text((4, cell // 2), names[p], fill="black", font=font, anchor="lm")
        img.paste(strip.rotate(90, expand=True), (x0 + p * cell, top - 20 - label_w))
    draw.text((8, y0 + n * cell + 8), "rows: actual", fill="black", font=small)
    with atomic_path(path) as tmp:
        img.save(tmp, "PNG")
    return Path(path)

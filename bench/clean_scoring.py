"""Cleaning: scoring time per 1,000 images and planted-error recall (``fastcore-cv clean``).

Folders: the texture crops (scikit-image's brick/grass/gravel photos, 96 px crops every
32 px, train/ + valid/) and the demo's digits (32 px), each with 5% of the files moved into
a wrong class.
Model: EfficientNet-Lite0's ImageNet body with a new head (a weights-only checkpoint), so the
out-of-fold head sees only what the body gives: the honest case. The textures are scored at
224 px and at 32 px (the demo's size), the digits at 32 px; the time is split into the
decode check, the body's features, the out-of-fold head + cleanlab, and the perceptual
hashes. Recall: the share of
planted errors among the 2 x planted highest-scored files. Also the duplicate threshold's
measurement (duplicates.py): hash distances of resized + recompressed copies vs distinct
images.

Usage: python bench/clean_scoring.py [--no-write]   (~3-6 min on 2 shared cores)
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

PLANTED_SHARE = 0.05


def plant(root: Path, seed: int = 0) -> list[str]:
    """Move PLANTED_SHARE of the files of ``root`` into another class; their new paths."""
    from fastcore_cv.clean.inventory import scan

    classes, items = scan(root)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(items), max(2, round(PLANTED_SHARE * len(items))), replace=False)
    moved = []
    for k in picks:
        item = items[int(k)]
        wrong = classes[
            (classes.index(item.label) + 1 + int(rng.integers(len(classes) - 1))) % len(classes)
        ]
        src = root / item.path
        dst = src.parent.parent / wrong / f"planted_{src.name}"
        src.rename(dst)
        moved.append(dst.relative_to(root).as_posix())
    return moved


def checkpoint(folder: Path, classes: list[str], size: int) -> Path:
    from fastcore_cv.export.checkpoint import save_checkpoint
    from fastcore_cv.vision.models import BodyHead, build_arch, make_head
    from fastcore_cv.vision.preprocessing import PreprocessConfig

    lite = build_arch("efficientnet_lite0", True, len(classes))
    model = BodyHead(lite.body, make_head(lite.num_features, len(classes), "linear")).eval()
    return save_checkpoint(
        model,
        folder / f"lite0_{len(classes)}_{size}.pt",
        arch="efficientnet_lite0",
        classes=classes,
        preprocess_config=PreprocessConfig(size),
    )


def score_once(source: Path, work: Path, size: int) -> dict:
    from fastcore_cv.clean.inventory import scan
    from fastcore_cv.clean.session import CleanSession

    root = work / f"{source.name}_{size}"
    shutil.copytree(source, root)
    planted = plant(root)
    classes, _ = scan(root)
    model = checkpoint(work, classes, size)
    start = time.perf_counter()
    session = CleanSession(root, model)
    total = time.perf_counter() - start
    items = [i for i in session.items() if i["issue"] != "undecodable"]
    top = {i["path"] for i in sorted(items, key=lambda i: -i["score"])[: 2 * len(planted)]}
    flagged = {i["path"] for i in items if i["issue"] == "label"}
    n = len(session.scored)
    return {
        "folder": source.name,
        "size": size,
        "files": n,
        "planted": len(planted),
        "recall": sum(p in top for p in planted) / len(planted),
        "flagged": len(flagged),
        "flagged_planted": len(flagged & set(planted)),
        "per_1000": {k: 1000 * v / n for k, v in session.meta["seconds"].items()},
        "total_per_1000": 1000 * total / n,
    }


def hash_distances(root: Path, copies_every: int = 5) -> tuple[list[int], np.ndarray]:
    """(distances of resized/recompressed copies to their originals, min distance between
    distinct files), max of pHash and dHash bits."""
    from fastcore_cv.clean.duplicates import perceptual_hashes
    from fastcore_cv.vision import get_image_files

    files = get_image_files(root)
    bits = perceptual_hashes(files).reshape(len(files), 2, 64)
    dist = (bits[:, None] != bits[None]).sum(-1).max(-1)
    distinct = dist[np.triu_indices(len(files), 1)]
    copies = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in files[::copies_every]:
            with Image.open(f) as im:
                im = im.convert("RGB")
                for scale, quality in ((0.5, 75), (2.0, 90), (0.75, 60), (1.5, 50)):
                    w, h = im.size
                    buf = io.BytesIO()
                    im.resize((max(8, int(w * scale)), max(8, int(h * scale)))).save(
                        buf, "JPEG", quality=quality
                    )
                    p = Path(tmp) / "copy.jpg"
                    p.write_bytes(buf.getvalue())
                    b = perceptual_hashes([f, p]).reshape(2, 2, 64)
                    copies.append(int((b[0] != b[1]).sum(-1).max()))
    return copies, distinct


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run() -> str:
    from fastcore_cv.clean.duplicates import NEAR_BITS
    from fastcore_cv.vision import write_digits_folder, write_texture_folder

    rows, dup_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        textures = write_texture_folder(work / "src" / "textures", size=96, stride=32)
        digits = write_digits_folder(work / "src" / "digits")
        for source, size in ((textures, 224), (textures, 32), (digits, 32)):
            r = score_once(source, work, size)
            print(r, flush=True)
            rows.append(r)
        for name, root in (("textures", textures), ("digits", digits)):
            copies, distinct = hash_distances(root)
            dup_rows.append(
                f"| {name} | {len(copies)} | {max(copies)} | {len(distinct):,} | "
                f"{int(distinct.min())} | {int((distinct <= NEAR_BITS).sum())} |"
            )
    lines = [
        "| folder | size | files | planted | recall in top 2x | flagged (planted) | "
        "decode check | body features | OOF head + cleanlab | hashes | whole scoring |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["per_1000"]
        lines.append(
            f"| {r['folder']} | {r['size']} px | {r['files']} | {r['planted']} | "
            f"{r['recall']:.0%} | {r['flagged']} ({r['flagged_planted']}) | "
            f"{t['decode_check']:.1f} s | {t['features']:.1f} s | {t['oof_and_cleanlab']:.1f} s "
            f"| {t['hashes']:.1f} s | {r['total_per_1000']:.1f} s |"
        )
    body = "\n".join(lines)
    body += (
        "\n\nTimes are seconds per 1,000 images (the body on torch's default threads, "
        f"{_threads()}, on a machine shared with other jobs: compare rows of one run; the "
        "whole scoring also hashes every file's sha256). Model: EfficientNet-Lite0's "
        "ImageNet body, a "
        f"5-fold out-of-fold linear head; {PLANTED_SHARE:.0%} of the files moved into a wrong "
        "class.\n\nNear-duplicate threshold (max of pHash and dHash bit distances; "
        f"NEAR_BITS = {NEAR_BITS}):\n\n"
        "| folder | copies (0.5-2x, JPEG q50-90) | copies: max distance | distinct pairs | "
        "distinct: min distance | distinct pairs within NEAR_BITS |\n|---|---|---|---|---|---|\n"
        + "\n".join(dup_rows)
    )
    return body


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    body = run()
    print(body)
    if not args.no_write:
        from report import replace_section

        replace_section(
            "Cleaning: scoring time and planted-error recall", body, "python bench/clean_scoring.py"
        )

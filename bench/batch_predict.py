"""Batch scoring vs today's one-at-a-time loop: images/s of ``predict_folder`` (export/batch.py:
a pool of decode+score threads, batches through onnxruntime) against the loop it replaced
(``Predictor.predict`` per file, one thread), measured in the same run on the same files.

Model: EfficientNet-Lite0 at 224 px exported fp32 (bench/lite0_models.py's recipe, without the
int8 step). Images: N real-ish JPEGs, random crops of scikit-image's photos resized to
phone-thumbnail sizes (320-1024 px on the long side). Rounds are interleaved (old, new, old,
new...) and the best of each is kept, so a neighbour's burst hits both alike.

Usage: python bench/batch_predict.py [--images 512] [--rounds 2] [--model lite0.onnx]
(writes the "Batch scoring" section of bench/RESULTS.md; ~1-2 min on 2 cores)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fastcore_cv.export.batch import BATCH_SIZE, default_workers
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.output_files import atomic_path
from fastcore_cv.threads import available_cores
from fastcore_cv.vision.decode import ImageError
from fastcore_cv.vision.files import get_image_files

sys.path.insert(0, str(Path(__file__).parent))


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs in ``folder``: random crops (50-100% of the short side, any aspect) of the
    bench photos, resized so the long side is 320-1024 px, quality 80-95."""
    import lite0_models

    rng = np.random.default_rng(seed)
    photos = lite0_models.photos()
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        ch, cw = (int(s * rng.uniform(0.5, 1.0)) for s in (h, w))
        t, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = Image.fromarray(np.ascontiguousarray(p[t : t + ch, left : left + cw]))
        scale = rng.uniform(320, 1024) / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        img.save(folder / f"{i:05d}.jpg", quality=int(rng.integers(80, 96)))
    return get_image_files(folder)


def one_at_a_time(predictor: Predictor, folder: Path, out: Path) -> None:
    """The loop ``predict_folder`` ran before export/batch.py: one file, one run, one thread."""
    files = get_image_files(folder)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "probability", "error"])
        for path in files:
            try:
                p = predictor.predict(path, top_k=1)
                writer.writerow([str(path), p.label, f"{p.probability:.6f}", ""])
            except ImageError as e:
                writer.writerow([str(path), "", "", e.reason])


def export_lite0(folder: Path) -> Path:
    """EfficientNet-Lite0 (ImageNet weights) at 224 px, fp32, as the serving benchmarks."""
    import lite0_models

    from fastcore_cv.export import to_onnx
    from fastcore_cv.vision.models import efficientnet_lite0
    from fastcore_cv.vision.preprocessing import PreprocessConfig

    path = folder / "lite0.onnx"
    model = efficientnet_lite0(pretrained=True).eval()
    classes = [f"imagenet_{i}" for i in range(1000)]
    config, verify = PreprocessConfig(224), lite0_models.photos()
    to_onnx(model, path, classes=classes, preprocess_config=config, verify_images=verify)
    return path


def same_labels(a: Path, b: Path) -> bool:
    rows = [list(csv.reader(p.open())) for p in (a, b)]
    return [r[:2] for r in rows[0]] == [r[:2] for r in rows[1]]


def run(n_images: int, rounds: int, model: Path | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = model or export_lite0(tmp)
        folder = tmp / "images"
        folder.mkdir()
        files = write_images(folder, n_images)
        one = Predictor(model, threads=1)  # today's CLI default (--threads 1)
        two = Predictor(model, threads=2)
        cases = {
            "one at a time, 1 thread (before)": lambda o: one_at_a_time(one, folder, o),
            "one at a time, 2 onnxruntime threads": lambda o: one_at_a_time(two, folder, o),
            **{
                f"batch {bs}, {default_workers(1)} workers x 1 thread": (
                    lambda o, bs=bs: one.predict_folder(
                        folder, o, progress="silent", batch_size=bs
                    )  # fmt: skip
                )
                for bs in sorted({1, BATCH_SIZE, 16})
            },
        }
        best = {name: (float("inf"), 0.0) for name in cases}  # (wall s, CPU s) of the best
        outputs = {name: tmp / f"out{i}.csv" for i, name in enumerate(cases)}
        for _ in range(rounds):
            for name, fn in cases.items():
                start, cpu = time.perf_counter(), time.process_time()
                fn(outputs[name])
                wall = time.perf_counter() - start
                if wall < best[name][0]:
                    best[name] = (wall, time.process_time() - cpu)
        before = next(iter(cases))
        agree = all(same_labels(outputs[before], o) for o in outputs.values())
    load = os.getloadavg()[0]
    rows = [
        "| path | images/s | vs one at a time, 1 thread | CPU ms per image | cores used |",
        "|---|---|---|---|---|",
    ]
    for name, (wall, cpu) in best.items():
        rows.append(f"| {name} | {len(files) / wall:.0f} | {best[before][0] / wall:.2f}x | "
                    f"{cpu / len(files) * 1e3:.1f} | {cpu / wall:.2f} |")  # fmt: skip
    return (
        f"`predict MODEL FOLDER --csv` on {len(files)} JPEGs (random crops of scikit-image "
        f"photos, 320-1024 px long side), EfficientNet-Lite0 224 fp32, {available_cores()} "
        f"cores, best of {rounds} interleaved rounds; load average {load:.1f} at the end. "
        f"Default batch size {BATCH_SIZE}. Same labels on every row: {agree}. Cores used = "
        "CPU time / wall time: on a busy machine (the kernel shares the CPU per session, "
        "sched_autogroup) extra threads cannot raise it, so compare only quiet runs.\n\n"
        + "\n".join(rows)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=Path, help="an exported 224 px .onnx (skip the export)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    body = run(args.images, args.rounds, args.model)
    print(body)
    if not args.no_write:
        from report import replace_section

        replace_section("Batch scoring", body, "python bench/batch_predict.py")

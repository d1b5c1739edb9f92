"""Scoring throughput per core (issue 15, docs/scale.md): EfficientNet-Lite0 at 224 px, fp32 and
int8, onnxruntime on 1 intra-op thread, split into decode+preprocess vs inference per image,
then end to end through export/batch.py's ``score_files`` with 1 and 2 workers, at batch 1
("single image") and the default batch.

Images: real photos (scikit-image's chelsea, coffee, astronaut, rocket), each resized to two
realistic sizes and saved as JPEG quality 90: 640x480 (a web or thumbnail copy) and 2048x1536
(a 3 MP camera photo). Their mean bytes are reported: they are what storage and the network
carry per photo. The decode uses the Predictor's own preprocessing (JPEG draft mode on).

"Per core" = images per CPU-second of the process (all its threads): on a 2-core machine
shared with other jobs the wall-clock rate of 2 workers cannot show the second core, but CPU
time per image can. Rounds are interleaved and the best is kept.

Usage: python bench/scale_throughput.py [--images 64] [--rounds 2] [--models DIR] [--quick]
(writes the "Scoring throughput per core" section of bench/RESULTS.md; ~2-3 min on 2 cores;
``--models DIR``: reuse DIR/lite0.onnx and DIR/lite0.int8.onnx; ``--quick``: 8 images, one
round, prints only)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fastcore_cv.export.batch import BATCH_SIZE, score_files
from fastcore_cv.export.predictor import Predictor
from fastcore_cv.threads import available_cores
from fastcore_cv.vision.preprocessing import preprocess

sys.path.insert(0, str(Path(__file__).parent))
import lite0_models  # noqa: E402

SIZES = ((640, 480), (2048, 1536))  # (width, height)


def write_photos(folder: Path, size: tuple[int, int], n: int) -> list[Path]:
    """``n`` JPEGs (quality 90) of ``size``: the four photos, cropped to 4:3 and resized."""
    out = []
    photos = lite0_models.photos()
    for i in range(n):
        p = Image.fromarray(photos[i % len(photos)])
        w, h = p.size
        cw, ch = (w, round(w * 3 / 4)) if w * 3 <= h * 4 else (round(h * 4 / 3), h)
        left, top = (w - cw) // 2, (h - ch) // 2
        img = p.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"{size[0]}x{size[1]}_{i:04d}.jpg"
        img.save(path, "JPEG", quality=90 - i % 8)  # slightly different files, as a real set
        out.append(path)
    return out


def per_image_ms(fn, items: list, rounds: int) -> float:
    """Best over ``rounds`` of the median CPU ms of ``fn(item)`` on the calling thread (Pillow
    and a 1-thread onnxruntime session compute there): CPU time, not wall, so that time spent
    waiting for a core on a shared machine is not counted."""
    best = float("inf")
    for _ in range(rounds):
        times = []
        for item in items:
            t = time.thread_time()
            fn(item)
            times.append((time.thread_time() - t) * 1e3)
        best = min(best, statistics.median(times))
    return best


def split(predictor: Predictor, files: list[Path], rounds: int) -> dict[str, float]:
    """Decode+preprocess ms per image, inference ms at batch 1 and per image at BATCH_SIZE."""
    config = predictor.config
    decode = per_image_ms(lambda f: preprocess(f, config), files, rounds)
    x = np.stack([preprocess(f, config) for f in files[:BATCH_SIZE]])
    one = per_image_ms(lambda i: predictor.run(x[i : i + 1]), list(range(len(x))) * 4, rounds)
    batch = per_image_ms(lambda _: predictor.run(x), [0] * 8, rounds) / len(x)
    return {"decode": decode, "infer1": one, "inferB": batch}


def end_to_end(predictor: Predictor, files: list[Path], workers: int, batch: int) -> tuple:
    """(wall s, CPU s) of scoring ``files`` through ``score_files``."""
    start, cpu = time.perf_counter(), time.process_time()
    n = sum(1 for s in score_files(predictor, files, batch_size=batch, workers=workers))
    assert n == len(files)
    return time.perf_counter() - start, time.process_time() - cpu


def run(n_images: int, rounds: int, models: Path | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if models is None:
            built = lite0_models.build(tmp)
            paths = {"fp32": built.fp32, "int8": built.int8}
        else:
            paths = {"fp32": models / "lite0.onnx", "int8": models / "lite0.int8.onnx"}
        sets = {}
        for size in SIZES:
            folder = tmp / f"{size[0]}x{size[1]}"
            folder.mkdir()
            sets[size] = write_photos(folder, size, n_images)
        predictors = {k: Predictor(p, threads=1) for k, p in paths.items()}
        split_rows, e2e = [], {}
        for name, predictor in predictors.items():
            for size, files in sets.items():
                split_rows.append((name, size, split(predictor, files, rounds)))
        cases = [(m, size, w, b) for m in predictors for size in SIZES
                 for w in (1, 2) for b in sorted({1, BATCH_SIZE})]  # fmt: skip
        for _ in range(rounds):  # interleaved: a neighbour's burst hits every case alike
            for m, size, w, b in cases:
                wall, cpu = end_to_end(predictors[m], sets[size], w, b)
                if wall < e2e.get((m, size, w, b), (float("inf"),))[0]:
                    e2e[(m, size, w, b)] = (wall, cpu)
        nbytes = {size: statistics.mean(f.stat().st_size for f in files)
                  for size, files in sets.items()}  # fmt: skip
    load = os.getloadavg()[0]
    lines = [
        f"EfficientNet-Lite0 224 (bench/lite0_models.py: fp32 export, static int8 QDQ), "
        f"onnxruntime 1 intra-op thread per session, {available_cores()} cores, "
        f"{n_images} JPEGs per size (scikit-image's four photos cropped to 4:3, resized, "
        f"quality 83-90), best of {rounds} interleaved rounds; load average {load:.1f} at the "
        "end (the machine is shared: compare rows of one run).",
        "",
        "Mean JPEG bytes per photo: "
        + ", ".join(f"{w}x{h}: {nbytes[(w, h)] / 1e3:.0f} kB" for w, h in SIZES)
        + ".",
        "",
        "Per image, one at a time on 1 thread (median CPU ms of the calling thread): "
        "decode+preprocess is the Predictor's "
        "`preprocess` (decode with JPEG draft, resize, crop, normalise); inference is "
        f"`Predictor.run` on already-preprocessed input, at batch 1 and per image at batch "
        f"{BATCH_SIZE}.",
        "",
        "| model | photo | decode+preprocess ms | inference ms (batch 1) | inference ms/image "
        f"(batch {BATCH_SIZE}) | decode share (batch 1) | images/s per core (sum) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (w, h), t in split_rows:
        total = t["decode"] + t["infer1"]
        share = t["decode"] / total
        lines.append(f"| {name} | {w}x{h} | {t['decode']:.2f} | {t['infer1']:.2f} | "
                     f"{t['inferB']:.2f} | {share:.0%} | {1e3 / total:.0f} |")  # fmt: skip
    lines += [
        "",
        "End to end through `score_files` (export/batch.py: decode+score threads, one session): "
        "images/s is wall clock; CPU ms/image is the process's CPU time (all threads) per "
        "image; images per core-second = 1000 / CPU ms.",
        "",
        "| model | photo | workers | batch | images/s | CPU ms/image | images per core-second |",
        "|---|---|---|---|---|---|---|",
    ]
    for (m, (w, h), workers, b), (wall, cpu) in e2e.items():
        n = n_images
        lines.append(f"| {m} | {w}x{h} | {workers} | {b} | {n / wall:.0f} | "
                     f"{cpu / n * 1e3:.1f} | {n / cpu:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", type=Path, help="folder with lite0.onnx and lite0.int8.onnx")
    parser.add_argument("--quick", action="store_true", help="8 images, 1 round, print only")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 8, 1
    body = run(args.images, args.rounds, args.models)
    print(body)
    if not args.quick:
        from report import replace_section

        command = "python bench/scale_throughput.py" + (" --models DIR" if args.models else "")
        replace_section("Scoring throughput per core", body, command)

"""Ray batch scoring vs the local engine: images/s of ``predict MODEL SOURCE --out DIR`` with
``--engine local`` (export/batch.py threads) and ``--engine ray`` (export/ray_engine.py: a pool
of Predictor actors on a local Ray), on the same files into the same shard layout, fp32 and
int8, plus what Ray costs before the first image (``ray.init``, and a run's fixed cost:
actor start + model load, measured on a tiny run).

Model: EfficientNet-Lite0 224 (bench/lite0_models.py: fp32 and static int8). Images: the JPEGs
of bench/batch_predict.py (320-1024 px long side). Rounds are interleaved (local, ray, local,
ray) and the best of each is kept. Each Ray run builds its actor pool anew (Ray Data does per
dataset), so the Ray figures include it, as a real `predict --engine ray` does.

Usage: python bench/ray_scoring.py [--images 512] [--rounds 2] [--quick]
(writes the "Ray batch scoring" section of bench/RESULTS.md; ~3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray

from fastcore_cv.export.predictor import Predictor
from fastcore_cv.export.ray_engine import ray_cluster, score_to_shards_ray
from fastcore_cv.export.shards import list_sources, plan_shards, read_shards, score_to_shards
from fastcore_cv.threads import available_cores

sys.path.insert(0, str(Path(__file__).parent))
SHARD_SIZE = 128


def _run(engine: str, model: Path, sources: list[str], out: Path) -> float:
    """Wall seconds of one scoring run into a fresh ``out`` (the Predictor load included)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    plan = plan_shards(sources, out, model=model, shard_size=SHARD_SIZE)
    if engine == "local":
        score_to_shards(Predictor(model), plan)
    else:
        score_to_shards_ray(model, plan)
    return time.perf_counter() - start


def run(n_images: int, rounds: int, quick: bool) -> str:
    import batch_predict
    import lite0_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = lite0_models.build(tmp)
        folder = tmp / "images"
        folder.mkdir()
        batch_predict.write_images(folder, n_images)
        sources = list_sources(folder)
        with ray_cluster(num_cpus=available_cores()) as init_s:
            cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
            cold = _run("ray", models.fp32, sources[:8], tmp / "tiny")  # + Ray Data's actors
            fixed = _run("ray", models.fp32, sources[:8], tmp / "tiny")  # actors + model load
            best: dict[tuple[str, str], float] = {}
            same = True
            for kind in ("fp32", "int8"):
                model = getattr(models, kind)
                for _ in range(rounds):
                    for engine in ("local", "ray"):
                        wall = _run(engine, model, sources, tmp / engine)
                        key = (kind, engine)
                        best[key] = min(best.get(key, float("inf")), wall)
                same &= read_shards(tmp / "local") == read_shards(tmp / "ray")
    load = os.getloadavg()[0]
    rows = [
        "| model | engine | images/s | wall s | ray / local |",
        "|---|---|---|---|---|",
    ]
    for (kind, engine), wall in best.items():
        ratio = best[(kind, "local")] / wall
        rows.append(f"| {kind} | {engine} | {n_images / wall:.0f} | {wall:.2f} | "
                    f"{ratio:.2f}x |")  # fmt: skip
    quick_note = " (--quick: too few images for a throughput figure)" if quick else ""
    return (
        f"`predict MODEL FOLDER --out DIR --engine local|ray` on {n_images} JPEGs "
        f"(bench/batch_predict.py's, 320-1024 px), {lite0_models.NAME}, {available_cores()} "
        f"cores, Ray local cluster of {cluster_cpus} CPUs (1 actor per CPU, 1 onnxruntime "
        f"thread each; local: {available_cores()} threads x 1), shards of {SHARD_SIZE}, best "
        f"of {rounds} interleaved rounds; load average {load:.1f} at the end (a shared, busy "
        f"machine: compare ratios within this run){quick_note}. Same shard files, cell for "
        f"cell, from both engines: {same}.\n\n"
        f"Ray's startup: `ray.init` (a local cluster) {init_s:.1f} s; each run's fixed cost "
        f"(actor pool start + one Predictor per actor), from an 8-image run: {fixed:.1f} s "
        f"({cold:.1f} s for the first run after `ray.init`, which also starts Ray Data's own "
        "actors).\n\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="32 images, 1 round, print only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds, args.no_write = 32, 1, True
    body = run(args.images, args.rounds, args.quick)
    print(body)
    if not args.no_write:
        from report import replace_section

        replace_section("Ray batch scoring", body, "python bench/ray_scoring.py")

"""Batch scoring on Ray Data: the shard layout of export/shards.py, scored by a pool of actors.

The pending shards' files go in as rows of up to ``batch_size`` consecutive sources
(``from_items``), so every onnxruntime run holds the very files the local engine batches
together: the same batches, the same ``preprocess`` and the same error text, hence the same
numbers (export/batch.py ``score_files`` runs inside each actor). Each actor opens one
Predictor (one onnxruntime session) with ``threads`` intra-op threads and asks Ray for
``threads`` CPUs, so Ray's scheduler keeps actors x threads within every node's cores (the
thread policy of fastcore_cv/threads.py, cluster-wide). Actors read the files themselves
(paths, or URIs through pyarrow.fs), so a bad file is one error row, not a failed job. The
driver collects the small result rows and writes each shard when its last row arrives.
Torch-free; needs the [ray] extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ray
import ray.data

from fastcore_cv.checks import check_int
from fastcore_cv.export.batch import BATCH_SIZE
from fastcore_cv.export.shards import Row, ShardPlan, ShardSummary, score_sources, write_shard
from fastcore_cv.threads import available_cores

CHUNKS_PER_CALL = 8  # batch_size-file rows per actor call: 32 images, ~0.3 s at 224 px


class _Scorer:
    """A Ray Data actor: one Predictor, built once, scoring rows of sources."""

    def __init__(self, model: str, threads: int, threshold: float | None) -> None:
        from fastcore_cv.export.predictor import Predictor

        self.predictor = Predictor(model, threads=threads)
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cols: dict[str, list] = {k: [] for k in ("shard", "index", "path", "label",
                                                  "probability", "accepted", "error")}  # fmt: skip
        for shard, first, sources in zip(batch["shard"], batch["first"], batch["sources"],
                                         strict=True):  # fmt: skip
            sources = json.loads(sources)
            rows = score_sources(self.predictor, sources, batch_size=len(sources), workers=1,
                                 threshold=self.threshold)  # fmt: skip
            for j, (path, label, prob, accepted, error) in enumerate(rows):
                cols["shard"].append(int(shard))
                cols["index"].append(int(first) + j)
                cols["path"].append(path)
                cols["label"].append(label or "")
                cols["probability"].append(np.nan if prob is None else prob)
                cols["accepted"].append(-1 if accepted is None else int(accepted))
                cols["error"].append(error)
        return {
            "shard": np.array(cols["shard"], np.int64),
            "index": np.array(cols["index"], np.int64),
            "path": np.array(cols["path"], object),
            "label": np.array(cols["label"], object),
            "probability": np.array(cols["probability"], np.float64),
            "accepted": np.array(cols["accepted"], np.int8),
            "error": np.array(cols["error"], object),
        }


@contextlib.contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None) -> Iterator[float]:
    """Use the running Ray (left running), or connect to ``address``/RAY_ADDRESS, or start a
    local one on 127.0.0.1 with ``num_cpus`` (default: this process's cores) and stop it at
    the end. Yields the seconds ``ray.init`` took (0 when Ray was already up)."""
    if ray.is_initialized():
        yield 0.0
        return
    start = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or available_cores(),
                 _node_ip_address="127.0.0.1", **quiet)  # fmt: skip
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()


def score_to_shards_ray(
    model: str | os.PathLike,
    plan: ShardPlan,
    *,
    threads: int = 1,
    actors: int | None = None,
    batch_size: int = BATCH_SIZE,
    threshold: float | None = None,
    max_shards: int | None = None,
) -> ShardSummary:
    """Score ``plan``'s pending shards on the running Ray (see ``ray_cluster``) with ``actors``
    Predictor actors (default: the cluster's CPUs / ``threads``); write each shard atomically
    as it completes. ``max_shards``: stop after writing this many (None: all)."""
    check_int(threads, "threads")
    check_int(batch_size, "batch_size")
    start = time.perf_counter()
    pending = plan.pending()
    todo = pending if max_shards is None else pending[: check_int(max_shards, "max_shards")]
    written = errors = 0
    if todo:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, cpus // threads) if actors is None else check_int(actors, "actors")
        expected = {k: len(plan.rows(k)) for k in todo}
        items = [
            {"shard": k, "first": k * plan.shard_size + i,
             "sources": json.dumps(plan.rows(k)[i : i + batch_size])}
            for k in todo for i in range(0, expected[k], batch_size)
        ]  # fmt: skip
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        per_call = min(CHUNKS_PER_CALL, len(items))  # one block = one actor call
        ds = ray.data.from_items(items, override_num_blocks=-(-len(items) // per_call))
        ds = ds.map_batches(
            _Scorer,
            fn_constructor_args=(str(Path(model).resolve()), threads, threshold),
            batch_size=per_call,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=threads,
        )
        buffers: dict[int, dict[int, Row]] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            done = set()
            for k, i, path, label, prob, acc, err in zip(
                batch["shard"], batch["index"], batch["path"], batch["label"],
                batch["probability"], batch["accepted"], batch["error"], strict=True,
            ):  # fmt: skip
                row = (str(path), None, None, None, str(err)) if err else (
                    str(path), str(label), float(prob), bool(acc), "")  # fmt: skip
                buffers.setdefault(int(k), {})[int(i)] = row
                if len(buffers[int(k)]) == expected[int(k)]:
                    done.add(int(k))
            for k in sorted(done):
                rows = buffers.pop(k)
                errors += write_shard([rows[i] for i in sorted(rows)], plan.path(k))
                written += 1
        if buffers:  # Ray returned fewer rows than sent: a bug, never a silent gap
            raise RuntimeError(f"ray engine: shards {sorted(buffers)} came back incomplete")
    return ShardSummary(len(plan.sources), plan.count, written, plan.count - len(pending),
                        errors, plan.out, time.perf_counter() - start)  # fmt: skip

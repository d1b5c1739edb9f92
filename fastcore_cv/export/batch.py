"""Batch scoring: many image files -> one answer each, in file order, on every core.

Each of ``workers`` threads takes a batch of files, decodes and preprocesses them (Pillow
releases the GIL while it decodes and resizes: two threads preprocessed 640x480 JPEGs 1.8x
faster than one here) and runs the batch through the Predictor's one onnxruntime session
(``run`` releases the GIL; a session takes concurrent runs). workers x the session's intra-op
threads stays within the cores, so no two thread pools fight for a core (fastcore_cv/threads.py).
At most ``WINDOW`` batches per worker are in flight, so memory does not grow with the folder.
Torch-free, like the Predictor.
"""

from __future__ import annotations

import csv
import itertools
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastcore_cv.checks import check_int
from fastcore_cv.output_files import atomic_path
from fastcore_cv.progress import Progress
from fastcore_cv.threads import available_cores
from fastcore_cv.vision.preprocessing import ImageError, preprocess

if TYPE_CHECKING:
    from fastcore_cv.export.predictor import Prediction, Predictor

# At one intra-op thread a bigger batch is not faster per image on this CPU (EfficientNet-Lite0
# 224: 14 ms/image in batches of 1, 16 in batches of 8): the speed comes from the workers, and a
# small batch holds little memory (bench/RESULTS.md, "Batch scoring").
BATCH_SIZE = 4
WINDOW = 2  # batches in flight per worker: one running, one queued, so no worker waits
CSV_HEADER = ["path", "label", "probability", "accepted", "error"]


@dataclass(frozen=True)
class Scored:
    """One file's outcome: its prediction, or the ImageError that says why it has none."""

    path: Path
    prediction: Prediction | None
    error: ImageError | None

    @property
    def error_text(self) -> str:
        """The error as one CSV cell ("" when the file was read)."""
        e = self.error
        if e is None:
            return ""
        return f"{e.reason}: {e.detail}" if e.detail else e.reason


def default_workers(threads: int) -> int:
    """Scoring threads so that workers x onnxruntime ``threads`` fills the cores, at least 1."""
    check_int(threads, "threads")
    return max(1, available_cores() // threads)


def score_files(
    predictor: Predictor,
    files: Iterable[str | os.PathLike],
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    top_k: int = 1,
    threshold: float | None = None,
) -> Iterator[Scored]:
    """Yield one ``Scored`` per file, in the order of ``files``; a bad file is a Scored with
    its error, never an exception. ``files`` is read lazily (at most ``WINDOW`` x ``workers``
    batches ahead), so it may be a generator over a folder of any size. ``threshold``: as
    ``Predictor.predict`` (None: the file's calibrated one)."""
    check_int(batch_size, "batch_size")
    workers = default_workers(predictor.threads) if workers is None else workers
    check_int(workers, "workers")
    fixed = predictor.session.get_inputs()[0].shape[0]
    if isinstance(fixed, int):  # a file exported with a constant batch: one image per run
        batch_size = 1
    paths = iter(files)
    pending: deque[Future[list[Scored]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="fastcore-cv-score") as pool:
        try:
            while chunk := [Path(p) for p in itertools.islice(paths, batch_size)]:
                pending.append(pool.submit(_score_batch, predictor, chunk, top_k, threshold))
                if len(pending) >= WINDOW * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:  # the caller stopped early (or a batch failed): drop what has not started
            for future in pending:
                future.cancel()


def _score_batch(
    predictor: Predictor, paths: list[Path], top_k: int, threshold: float | None
) -> list[Scored]:
    """Decode ``paths`` into one batch (the bad ones left out) and run it once."""
    start = time.perf_counter()
    x = np.empty((len(paths), 3, *predictor.config.size), np.float32)
    read: list[int] = []
    errors: dict[int, ImageError] = {}
    for i, path in enumerate(paths):
        try:
            preprocess(path, predictor.config, max_pixels=predictor.max_pixels, out=x[len(read)])
            read.append(i)
        except ImageError as e:
            errors[i] = e
    probs = predictor.run(x[: len(read)]) if read else []
    each_ms = (time.perf_counter() - start) * 1e3 / len(paths)
    answers = {i: predictor._answer(p, top_k, each_ms, threshold)
               for i, p in zip(read, probs, strict=True)}  # fmt: skip
    return [Scored(path, answers.get(i), errors.get(i)) for i, path in enumerate(paths)]


@dataclass(frozen=True)
class CsvSummary:
    """What ``write_csv`` did: rows written and how many of them are errors."""

    images: int
    errors: int


def csv_cells(
    path: str, label: str | None, probability: float | None, accepted: bool | None, error: str
) -> list[object]:
    """One file's CSV cells (CSV_HEADER): empty label, probability and accepted when the file
    could not be read (``label`` None); the same text for write_csv and export/shards.py."""
    if label is None:
        return [path, "", "", "", error]
    return [path, label, f"{probability:.6f}", int(accepted), ""]


def write_csv(
    predictor: Predictor,
    files: list[Path],
    csv_path: str | os.PathLike,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    progress: str = "auto",
    threshold: float | None = None,
) -> CsvSummary:
    """Score ``files`` into ``csv_path`` (path, label, probability, accepted, error), one row
    per file in the order given, written atomically: a crash leaves the old file (or none).
    ``accepted`` is 0 for a "not sure" answer (below the threshold; the label stays)."""
    errors = 0
    with (
        atomic_path(csv_path) as tmp,
        open(tmp, "w", newline="") as f,
        Progress(len(files), "predict", progress, unit="images") as bar,
    ):
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        scored = score_files(
            predictor, files, batch_size=batch_size, workers=workers, threshold=threshold
        )
        for s in scored:
            p = s.prediction
            if p is None:
                errors += 1
                writer.writerow(csv_cells(str(s.path), None, None, None, s.error_text))
            else:
                writer.writerow(csv_cells(str(s.path), p.label, p.probability, p.accepted, ""))
            bar.update()
    return CsvSummary(len(files), errors)

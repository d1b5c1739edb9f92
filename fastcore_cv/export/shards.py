"""Sharded, resumable scoring output: a sorted file list -> DIR/shard-NNNNN.csv|parquet.

Shard k holds rows k*size .. (k+1)*size-1 of the sorted, de-duplicated list, so the layout is
a pure function of the list and the shard size. Each shard is written through a temp file and
renamed (output_files.atomic_path): a shard file that exists is complete, so a re-run skips it
and an interrupted run, resumed, writes every row exactly once. ``manifest.json`` records the
run (model hash, list hash, shard size, format): resuming with other inputs is refused rather
than mixed. Rows are the local engine's (export/batch.py CSV_HEADER, the same cell text).
Both engines use this module: ``score_to_shards`` here (threads, export/batch.py) and
export/ray_engine.py (Ray actors). Torch-free.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from fastcore_cv.checks import check_int
from fastcore_cv.export.batch import BATCH_SIZE, CSV_HEADER, csv_cells, score_files
from fastcore_cv.output_files import atomic_path, check_writable
from fastcore_cv.vision.files import get_image_files, sha256_of

if TYPE_CHECKING:
    from fastcore_cv.export.predictor import Predictor

SHARD_SIZE = 1000  # rows per shard: ~100 kB of CSV, ~10 s of work per core at 224 px
FORMATS = ("csv", "parquet")
LIST_SUFFIXES = (".txt", ".lst")
MANIFEST = "manifest.json"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.(csv|parquet)$")
# A row: path, label, probability, accepted, error; label/probability/accepted None on error.
Row = tuple[str, str | None, float | None, bool | None, str]


@dataclass(frozen=True)
class ShardPlan:
    """The sorted sources, the shard size, and the output folder's layout for them."""

    sources: list[str]
    shard_size: int
    out: Path
    fmt: str

    @property
    def count(self) -> int:
        return -(-len(self.sources) // self.shard_size)

    def path(self, k: int) -> Path:
        return self.out / f"shard-{k:05d}.{self.fmt}"

    def rows(self, k: int) -> list[str]:
        return self.sources[k * self.shard_size : (k + 1) * self.shard_size]

    def pending(self) -> list[int]:
        """Shards not on disk yet (a shard file that exists is complete: it was renamed in)."""
        return [k for k in range(self.count) if not self.path(k).exists()]


@dataclass(frozen=True)
class ShardSummary:
    """What a sharded run did: files, shards written now / skipped, errors in the new rows."""

    files: int
    shards: int
    written: int
    skipped: int
    errors: int
    out: Path
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.files} files in {self.shards} shards ({self.written} written, "
            f"{self.skipped} already there), {self.errors} unreadable, in "
            f"{self.seconds:.1f} s -> {self.out}"
        )


def is_uri(source: str) -> bool:
    """A 'scheme://...' source (file://, s3://, gs://, ...), read through pyarrow.fs."""
    scheme = urlparse(source).scheme
    return len(scheme) > 1 and "://" in source  # 'C:\\x' is a Windows path, not a URI


def list_sources(source: str | os.PathLike) -> list[str]:
    """A folder (its image files, recursive) or a .txt/.lst listing (one path or URI a line;
    blank lines and '#' comments skipped; relative paths are relative to the listing's folder)
    -> the sorted, de-duplicated sources. ValueError naming SOURCE when it is neither."""
    path = Path(source)
    if path.is_dir():
        return sorted({str(p) for p in get_image_files(path)})
    if not path.exists():
        raise ValueError(f"SOURCE: {path} does not exist (expected a folder or a .txt listing)")
    if not path.is_file() or path.suffix.lower() not in LIST_SUFFIXES:
        raise ValueError(f"SOURCE: {path} is neither a folder nor a .txt/.lst listing of files")
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        found.add(entry if is_uri(entry) or os.path.isabs(entry) else str(path.parent / entry))
    if not found:
        raise ValueError(f"SOURCE: {path} lists no files")
    return sorted(found)


def plan_shards(
    sources: list[str],
    out: str | os.PathLike,
    *,
    model: str | os.PathLike,
    shard_size: int = SHARD_SIZE,
    fmt: str = "csv",
    threshold: float | None = None,
) -> ShardPlan:
    """Check ``out`` (a new, empty or resumable folder) and write its manifest, before any work.
    A folder holding another run's shards (other files, model, size or format) is refused."""
    check_int(shard_size, "shard_size")
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {fmt!r}")
    if not sources:
        raise ValueError("SOURCE: no image files to score")
    out = check_writable(out, "--out", folder=True)
    manifest = {
        "model_sha256": sha256_of(model),
        "files": len(sources),
        "sources_sha256": hashlib.sha256("\n".join(sources).encode()).hexdigest(),
        "shard_size": shard_size,
        "format": fmt,
        "threshold": threshold,
        "columns": CSV_HEADER,
    }
    mpath = out / MANIFEST
    if mpath.exists():
        old = json.loads(mpath.read_text())
        diff = sorted(k for k in manifest if old.get(k) != manifest[k])
        if diff:
            raise ValueError(
                f"--out: {out} holds shards of another run (different {', '.join(diff)}); "
                "give a new folder, or the same model, SOURCE and options to resume"
            )
    elif out.exists() and any(not n.startswith(".") for n in os.listdir(out)):
        raise ValueError(f"--out: {out} is not empty and has no {MANIFEST}; give a new folder")
    else:
        with atomic_path(mpath) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    for stale in out.glob(".shard-*.tmp"):  # a killed run's half-written temp files
        stale.unlink(missing_ok=True)
    return ShardPlan(sources, shard_size, out, fmt)


def score_sources(
    predictor: Predictor,
    sources: Sequence[str],
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    threshold: float | None = None,
) -> list[Row]:
    """One Row per source, in order, through the local engine's ``score_files`` (the same
    batches, preprocessing and error text). URIs are first copied to a temp folder with
    pyarrow.fs; a URI that cannot be read is a row with its error."""
    if not any(is_uri(s) for s in sources):
        scored = score_files(predictor, sources, batch_size=batch_size, workers=workers,
                             threshold=threshold)  # fmt: skip
        return [_row(src, s) for src, s in zip(sources, scored, strict=True)]
    with tempfile.TemporaryDirectory(prefix="fastcore-cv-fetch-") as tmp:
        local, failed = [], {}
        for i, src in enumerate(sources):
            if not is_uri(src):
                local.append(src)
                continue
            dest = Path(tmp, f"{i:06d}{Path(urlparse(src).path).suffix}")
            try:
                _fetch(src, dest)
                local.append(str(dest))
            except (OSError, ValueError) as e:  # pyarrow raises OSError/ArrowInvalid (ValueError)
                failed[i] = f"unreadable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                local.append(None)
        todo = [p for p in local if p is not None]
        scored = iter(score_files(predictor, todo, batch_size=batch_size, workers=workers,
                                  threshold=threshold))  # fmt: skip
        return [(src, None, None, None, failed[i]) if i in failed else _row(src, next(scored))
                for i, src in enumerate(sources)]  # fmt: skip


def _fetch(uri: str, dest: Path) -> None:
    from pyarrow import fs  # comes with the [ray] extra; only URIs need it

    filesystem, path = fs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(path) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _row(path: str, s) -> Row:
    p = s.prediction
    if p is None:
        return (path, None, None, None, s.error_text)
    return (path, p.label, p.probability, p.accepted, "")


def write_shard(rows: Iterable[Row], path: Path) -> int:
    """Write one shard atomically (CSV: the cells of export/batch.py write_csv; Parquet: typed
    columns, nulls for a failed file); returns the number of error rows."""
    rows = list(rows)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols = list(zip(*rows, strict=True)) if rows else [[]] * 5
            types = [pa.string(), pa.string(), pa.float64(), pa.bool_(), pa.string()]
            table = pa.table({n: pa.array(c, t) for n, c, t in zip(CSV_HEADER, cols, types,
                                                                    strict=True)})  # fmt: skip
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_HEADER)
                writer.writerows(csv_cells(*row) for row in rows)
    return sum(r[1] is None for r in rows)


def read_shards(out: str | os.PathLike) -> list[dict[str, object]]:
    """Every row of every shard in ``out``, in shard order (CSV cells as text)."""
    rows: list[dict[str, object]] = []
    for p in sorted(Path(out).iterdir()):
        if not _SHARD_RE.match(p.name):
            continue
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(p).to_pylist())
        else:
            with open(p, newline="") as f:
                rows.extend(csv.DictReader(f))
    return rows


def score_to_shards(
    predictor: Predictor,
    plan: ShardPlan,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    threshold: float | None = None,
    max_shards: int | None = None,
) -> ShardSummary:
    """The local engine into the shard layout: each pending shard scored by export/batch.py's
    threads, then written. ``max_shards``: stop after writing this many (None: all)."""
    start, errors, written = time.perf_counter(), 0, 0
    pending = plan.pending()
    for k in pending[:max_shards]:
        rows = score_sources(predictor, plan.rows(k), batch_size=batch_size, workers=workers,
                             threshold=threshold)  # fmt: skip
        errors += write_shard(rows, plan.path(k))
        written += 1
    return ShardSummary(len(plan.sources), plan.count, written, plan.count - len(pending),
                        errors, plan.out, time.perf_counter() - start)  # fmt: skip

"""Benchmark of compile cost: `python -m fastcore_cv warmup` with an empty Numba cache (cold
compile), then again with the cache it wrote (warm load), plus the bare import time.

Usage: python bench/compile_cost.py   (writes the "compile cost" section of RESULTS.md)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out


def run() -> str:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FASTCORE_CV_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
        warmup = [sys.executable, "-m", "fastcore_cv", "warmup"]
        cold, cold_out = timed(warmup, env)
        warm, warm_out = timed(warmup, env)
        imp, _ = timed([sys.executable, "-c", "import fastcore_cv.kernels"], env)
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    rows = [
        "| step | wall time (whole process) |",
        "|---|---|",
        f"| `import fastcore_cv.kernels` | {imp:.2f} s |",
        f"| warmup, empty cache (cold compile) | {cold:.1f} s |",
        f"| warmup, cache filled (warm load) | {warm:.2f} s |",
        f"| cache size on disk | {size / 1e6:.1f} MB |",
    ]
    per_kernel = "Per kernel, cold:\n\n```\n" + cold_out.strip() + "\n```\n\n"
    per_kernel += "Per kernel, warm:\n\n```\n" + warm_out.strip() + "\n```"
    return "\n".join(rows) + "\n\n" + per_kernel


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    body = run()
    print(body)
    replace_section("compile cost", body, "python bench/compile_cost.py")

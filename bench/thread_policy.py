"""Benchmark of the thread policy: a Numba ``prange`` kernel alternating with a threaded
matmul (numpy's OpenBLAS or torch), under each configuration, each in a fresh process
(thread runtimes read their settings when they load, so this cannot be done in one process).

Usage: python bench/thread_policy.py   (writes the "thread policy" section of RESULTS.md)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, sys, time
order = sys.argv[1]
if order == "fastcore_cv first":
    import fastcore_cv
import numpy as np
if order == "numpy first":
    import fastcore_cv
import numba
from numba import njit, prange

@njit(parallel=True)
def scale(x, a):
    for i in prange(x.shape[0]):
        x[i] *= a

x = np.ones(200_000, np.float32)
if sys.argv[2] == "torch":
    import torch
    if order != "none":
        fastcore_cv.threads.sync_torch()
    A = torch.rand(256, 256)
else:
    A = np.random.rand(256, 256).astype(np.float32)
scale(x, 1.0)

def median_us(f, n=300):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e6)

mm_alone = median_us(lambda: A @ A)
k_alone = median_us(lambda: scale(x, 1.0))
tk, tm = [], []
for _ in range(300):
    t0 = time.perf_counter(); A @ A
    t1 = time.perf_counter(); scale(x, 1.0)
    t2 = time.perf_counter(); tm.append(t1 - t0); tk.append(t2 - t1)
print(json.dumps(dict(k_alone=k_alone, k_mixed=float(np.median(tk) * 1e6),
                      mm_alone=mm_alone, mm_mixed=float(np.median(tm) * 1e6),
                      layer=numba.threading_layer())))
"""

PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
CONFIGS = [
    ("numpy matmul, no policy (plain numba + numpy)", "none", "numpy", {}),
    ("numpy matmul, `import fastcore_cv` before numpy", "fastcore_cv first", "numpy", {}),
    ("numpy matmul, numpy imported before fastcore_cv", "numpy first", "numpy", {}),
    ("numpy matmul, OMP_WAIT_POLICY=PASSIVE instead", "none", "numpy", PASSIVE),
    ("torch matmul, no policy", "none", "torch", {}),
    ("torch matmul, fastcore_cv policy", "fastcore_cv first", "torch", {}),
    ("torch matmul, OMP_WAIT_POLICY=PASSIVE instead", "none", "torch", PASSIVE),
]


def run() -> str:
    rows = [
        "| configuration | kernel alone | kernel after matmul | matmul alone "
        "| matmul after kernel |",
        "|---|---|---|---|---|",
    ]
    for label, order, lib, env_extra in CONFIGS:
        policy_vars = ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")
        env = {k: v for k, v in os.environ.items() if k not in policy_vars}
        env.update(env_extra)
        command = [sys.executable, "-c", CHILD, order, lib]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(
            f"| {label} | {r['k_alone']:.0f} us | {r['k_mixed']:.0f} us | "
            f"{r['mm_alone']:.0f} us | {r['mm_mixed']:.0f} us |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    table = run()
    print(table)
    body = (
        "A 200k-element Numba `prange` kernel and a 256x256 float32 matmul, alternated 300 times "
        "in one process (medians), each configuration in a fresh process, 2 threads everywhere.\n\n"
        + table
    )
    replace_section("thread policy", body, "python bench/thread_policy.py")

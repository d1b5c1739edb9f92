"""Where the single-image time of EfficientNet-Lite0 goes in onnxruntime (1 thread): the
profiler's per-node times, grouped by kind of convolution, with the arithmetic rate each
kind reaches, next to NumPy's single-thread sgemm rate measured in the same run.

Why: it says whether the Predictor's fp32 ratio against torch eager can still grow. If the
convolutions already run at the core's matrix-multiply rate, no session setting can make
them much faster.

Usage: python bench/predict_profile.py   (writes the "predict profile" section of RESULTS.md)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

RUNS = 100
INT8_CONVS = "int8 pointwise + depthwise convs"


def _kind(weight: list[int]) -> str:
    """pointwise (1x1), depthwise (one input channel per group) or full (the stem)."""
    cout, cin_per_group, kh, kw = weight
    if kh == kw == 1:
        return "pointwise 1x1 conv"
    if cin_per_group == 1 and cout > 1:
        return "depthwise conv"
    return "full conv (stem)"


def _macs(event: dict) -> int:
    """Multiply-adds of one float conv node, from the shapes the profiler records."""
    weight = next(iter(event["args"]["input_type_shape"][1].values()))
    out = next(iter(event["args"]["output_type_shape"][0].values()))
    return int(np.prod(out[:2])) * int(np.prod(out[2:4])) * int(np.prod(weight[1:]))


def profile(path: Path, folder: Path) -> dict[str, list[float]]:
    """{kind: [ms per image, MACs per image]} over RUNS profiled single-image runs."""
    import onnxruntime as ort

    from fastcore_cv.export.predictor import session_options

    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, 224, 224), np.float32)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(RUNS):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"]["op_name"]
        shapes = e["args"].get("input_type_shape", [])
        if op == "Conv":
            kind = _kind(next(iter(shapes[1].values())))
            totals[kind][1] += _macs(e) / RUNS
        elif op == "QLinearConv":  # weights prepacked: the profiler does not record them
            kind = INT8_CONVS
        else:
            kind = "other ops"
        totals[kind][0] += e["dur"] / 1e3 / RUNS
    return dict(totals)


def sgemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """NumPy (OpenBLAS) float32 n x n matmul on one thread, GFLOP/s (median)."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    times = []
    with threadpool_limits(1):
        a @ a
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def run() -> str:
    import lite0_models

    with tempfile.TemporaryDirectory() as tmp:
        built = lite0_models.build(Path(tmp))
        tables = {name: profile(path, Path(tmp)) for name, path in
                  (("fp32", built.fp32), ("int8", built.int8))}  # fmt: skip
    blas = sgemm_gflops()
    # The int8 convs are the fp32 model's pointwise and depthwise ones: same arithmetic.
    fp32 = tables["fp32"]
    int8_macs = sum(fp32[k][1] for k in ("pointwise 1x1 conv", "depthwise conv") if k in fp32)
    if INT8_CONVS in tables["int8"]:
        tables["int8"][INT8_CONVS][1] = int8_macs
    rows = [
        "| model | node kind | ms per image | share | GMAC per image | rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, totals in tables.items():
        total_ms = sum(ms for ms, _ in totals.values())
        for kind, (ms, macs) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
            rate = f"{2 * macs / (ms / 1e3) / 1e9:.0f} GFLOP/s" if macs else "-"
            gmac = f"{macs / 1e9:.3f}" if macs else "-"
            rows.append(f"| {name} | {kind} | {ms:.2f} | {ms / total_ms:.0%} | {gmac} | {rate} |")
        rows.append(f"| {name} | all nodes | {total_ms:.2f} | 100% | | |")
    return (
        f"onnxruntime profiler, EfficientNet-Lite0 224 (bench/lite0_models.py), 1 intra-op "
        f"thread, the Predictor's session options, {RUNS} single-image runs (the profiler's "
        "per-node times; its own overhead is not in them). Rate = 2 x multiply-adds / time. "
        f"Same run, NumPy float32 1024x1024 matmul on 1 thread: {blas:.0f} GFLOP/s.\n\n"
        + "\n".join(rows)
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    body = run()
    print(body)
    replace_section("predict profile", body, "python bench/predict_profile.py")

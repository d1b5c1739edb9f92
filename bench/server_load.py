"""Benchmark of the server under load: the real ``fastcore-cv serve`` process (1 worker, 1
onnxruntime thread, EfficientNet-Lite0 224 from lite0_models.py) loaded by 8 concurrent
keep-alive clients posting a 451x300 JPEG: 30 s on the fp32 model and 30 s on the int8 one,
then 10,000 requests (multipart, as the upload page sends them) on int8 while the server's
memory (VmRSS of its process tree) is sampled every 1000 requests or every second.

Targets: zero errors, and memory flat across 10,000 requests (growth under FLAT_MB).

Usage: python bench/server_load.py   (writes the "server load" section of RESULTS.md)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

CLIENTS = 8
SECONDS = 30.0
RSS_REQUESTS = 10_000
WARMUP_REQUESTS = 200  # before each measured run; the memory "start" is taken after it
FLAT_MB = 5.0  # "flat": under 5 MB over 10,000 requests, i.e. < 0.5 kB per request
MB = 2**20


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f} MB"


def _machine_busy_s() -> float:
    """CPU seconds every core of the machine has been busy since boot (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _measured_load(server, jpeg: bytes, **kwargs):
    """``server.load`` plus where the CPU went meanwhile: (result, server CPU ms per request,
    cores taken by other work on the machine = machine busy time minus the server's and this
    process's, i.e. the load generator's)."""
    from fastcore_cv.perf.memory import process_tree

    def snapshot() -> tuple[float, float, float]:
        tree = process_tree(server.pid)
        return _machine_busy_s(), _cpu_s(tree), sum(os.times()[:2])

    busy0, server0, own0 = snapshot()
    result = server.load(jpeg, clients=CLIENTS, **kwargs)
    busy1, server1, own1 = snapshot()
    other = (busy1 - busy0) - (server1 - server0) - (own1 - own0)
    server_ms = (server1 - server0) * 1e3 / max(1, result.requests)
    return result, server_ms, max(0.0, other / result.seconds)


PLAN = [  # (model, limit, multipart body, worker processes); the long run last
    ("fp32", {"seconds": SECONDS}, False, 1),
    ("int8", {"seconds": SECONDS}, False, 1),
    ("int8", {"seconds": SECONDS}, False, 2),
    ("int8", {"requests": RSS_REQUESTS}, True, 1),
]
STEADY = PLAN[-1]  # the 10,000-request run that watches memory (server_abuse.py repeats it)


def measure(built, jpeg: bytes, name: str, limit: dict, multipart: bool, workers: int) -> tuple:
    """One run of the plan on a fresh server: (name, multipart, workers, result, server CPU
    ms per request, other work in cores)."""
    from fastcore_cv.perf.server import ServerProcess

    path = built.fp32 if name == "fp32" else built.int8
    with ServerProcess(path, workers=workers, threads=1) as server:
        server.load(jpeg, clients=CLIENTS, requests=WARMUP_REQUESTS, multipart=multipart)
        result, server_ms, other = _measured_load(server, jpeg, multipart=multipart, **limit)
    print(f"{name}: {result.summary()}; server CPU {server_ms:.1f} ms/request; "
          f"other work {other:.2f} cores", flush=True)  # fmt: skip
    return name, multipart, workers, result, server_ms, other


def table(results: list[tuple]) -> list[str]:
    """The markdown table of ``measure`` results."""
    import lite0_models

    rows = [
        "| model | workers | clients | body | seconds | requests | req/s | p50 | p99 | errors "
        "| RSS start | RSS after 10k | RSS growth | server CPU/request | other work |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, multipart, workers, r, server_ms, other in results:
        errors = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0"
        after = r.rss_after(RSS_REQUESTS)
        rows.append(
            f"| {lite0_models.NAME} {name} | {workers} | {r.clients} | "
            f"{'multipart' if multipart else 'raw JPEG'} | {r.seconds:.1f} | {r.requests:,} | "
            f"{r.requests_per_s:.1f} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | {errors} | "
            f"{_mb(r.rss[0].rss_bytes)} | {_mb(after.rss_bytes if after else None)} | "
            f"{r.rss_growth_bytes / MB:+.1f} MB | {server_ms:.1f} ms | {other:.2f} cores |"
        )
    return rows


def steady_notes(results: list[tuple]) -> list[str]:
    """The memory trace of the 10,000-request run (the last result) and the two targets."""
    long_run = results[-1][3]
    trace = [long_run.rss_after(k) for k in range(0, RSS_REQUESTS + 1, 1000)]
    growth_mb = long_run.rss_growth_bytes / MB
    total_errors = sum(r.error_count for _, _, _, r, *_ in results)
    return [
        "",
        "Server RSS (MB) of the 10,000-request run, every 1000 requests: "
        + ", ".join(f"{s.rss_bytes / MB:.1f}" for s in trace if s is not None)
        + ".",
        "",
        f"Targets: zero errors: {'met' if total_errors == 0 else f'NOT met ({total_errors})'}; "
        f"memory flat across 10,000 requests (growth under {FLAT_MB:.0f} MB): "
        f"{'met' if growth_mb < FLAT_MB else 'NOT met'} ({growth_mb:+.1f} MB).",
    ]


def run() -> tuple[str, dict]:
    """Build the models, run the plan; returns (markdown table + notes, figures)."""
    import lite0_models

    with tempfile.TemporaryDirectory() as tmp:
        built = lite0_models.build(Path(tmp))
        del built.model  # torch's copy is not needed here
        jpeg = lite0_models.chelsea_jpeg()
        results = [measure(built, jpeg, *step) for step in PLAN]
    text = "\n".join(table(results) + steady_notes(results))
    return text, {"busiest_other": max(o for *_, o in results)}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from report import replace_section

    table, figures = run()
    print(table)
    noisy = (
        " (it was, in this run: the figures are noisy)" if figures["busiest_other"] > 0.2 else ""
    )
    body = (
        "The real server (`python -m fastcore_cv serve MODEL --workers W --threads 1`: W "
        "processes, one Predictor each, at most one prediction per worker at a time) loaded by "
        f"{CLIENTS} concurrent clients (threads with keep-alive connections, "
        "`fastcore_cv.perf.load`) posting the 451x300 JPEG of scikit-image's cat to "
        f"`/predict`, after {WARMUP_REQUESTS} warm-up requests. p50/p99: latency seen by the "
        "clients (queueing included). RSS: VmRSS of the server's process tree, start = after "
        "the warm-up; growth = end minus start. Server CPU/request: the server's CPU time (all "
        "its threads) divided by the requests. The clients run on the same 2 cores as the "
        'server, so the figures are for both together. The machine is shared: "other work" '
        "is the CPU other processes took during the run (machine busy time minus the server's "
        f"and the load generator's, in cores of 2); rates and tails drop when it is high{noisy}."
        "\n\n" + table
    )
    replace_section("server load", body, "python bench/server_load.py")

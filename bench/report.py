"""Turn a pytest-benchmark JSON file into ratio tables and write them into bench/RESULTS.md.

Usage: python bench/report.py BENCH_JSON "COMMAND THAT PRODUCED IT"

Each suite becomes one section (replaced on re-run, other sections kept): a row per
(case, threads) with the median time of every implementation and the speed ratio
baseline_time / ours_time (> 1 means fastcore_cv is faster).
"""

from __future__ import annotations

import json
import platform
import re
import sys
from collections import defaultdict
from pathlib import Path

OURS = "fastcore_cv"
RESULTS = Path(__file__).with_name("RESULTS.md")
RATES = {"FLOP": ("GFLOP/s", 1e9), "B": ("GB/s", 1e9), "img": ("img/s", 1.0)}


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def machine_line(info: dict) -> str:
    cpu = info.get("cpu", {}).get("brand_raw") or platform.processor() or "unknown CPU"
    cores = info.get("cpu", {}).get("count", "?")
    return (
        f"Machine: {cpu}, {cores} cores, {platform.system()} {platform.release()}, "
        f"Python {info.get('python_version', platform.python_version())}"
    )


def suite_tables(data: dict) -> dict[str, str]:
    rows: dict[str, dict] = defaultdict(lambda: defaultdict(dict))
    impls: dict[str, list[str]] = defaultdict(list)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        suite, key = e["suite"], (e["case"], e["threads"])
        rows[suite][key][e["impl"]] = (b["stats"]["median"], e.get("work"), e.get("unit"))
        if e["impl"] not in impls[suite]:
            impls[suite].append(e["impl"])
    tables = {}
    for suite, cases in rows.items():
        names = [OURS] + [i for i in impls[suite] if i != OURS]
        baselines = names[1:]
        head = ["case", "threads"] + [f"{n} median" for n in names]
        head += [f"ratio vs {b}" for b in baselines] + ["fastcore_cv rate"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (case, threads), got in cases.items():
            ours = got.get(OURS)
            cells = [str(case), str(threads)]
            cells += [_fmt_time(got[n][0]) if n in got else "-" for n in names]
            for b in baselines:
                ok = ours and b in got
                cells.append(f"{got[b][0] / ours[0]:.2f}x" if ok else "-")
            rate = "-"
            if ours and ours[1] and ours[2] in RATES:
                label, scale = RATES[ours[2]]
                rate = f"{ours[1] / ours[0] / scale:.1f} {label}"
            lines.append("| " + " | ".join(cells + [rate]) + " |")
        tables[suite] = "\n".join(lines)
    return tables


def write_results(json_path: str, command: str) -> None:
    data = json.loads(Path(json_path).read_text())
    machine = machine_line(data.get("machine_info", {}))
    when = data.get("datetime", "")[:19]
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    for suite, table in suite_tables(data).items():
        section = (
            f"## {suite}\n\n{machine}  \nRun: {when} UTC  \nCommand: `{command}`\n\n"
            f"Ratio = baseline median / fastcore_cv median (> 1: fastcore_cv faster).\n\n"
            f"{table}\n"
        )
        pattern = re.compile(rf"^## {re.escape(suite)}\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(text):
            text = pattern.sub(lambda _m: section + "\n", text)
        else:
            text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    write_results(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "make bench")

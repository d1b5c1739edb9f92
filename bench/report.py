"""Turn a pytest-benchmark JSON file into ratio tables and write them into bench/RESULTS.md.

Usage: python bench/report.py BENCH_JSON "COMMAND THAT PRODUCED IT"

Each suite becomes one section (replaced on re-run, other sections kept): a row per
(case, threads) with the median time of every implementation and the speed ratio
baseline_time / ours_time (> 1 means fastcore_cv is faster).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from fastcore_cv.threads import machine_line

OURS = "fastcore_cv"
RESULTS = Path(__file__).with_name("RESULTS.md")
RATES = {"FLOP": ("GFLOP/s", 1e9), "B": ("GB/s", 1e9), "img": ("img/s", 1.0)}


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


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
        tables[suite] = "\n".join(lines + _extras(data, suite))
    return tables


STANDARD_KEYS = {"suite", "case", "impl", "threads", "work", "unit"}


def _fmt_value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _extras(data: dict, suite: str) -> list[str]:
    """Anything else a benchmark stored (p99, error rates, ...), one line per timing."""
    lines = []
    for b in data["benchmarks"]:
        e = b["extra_info"]
        more = {k: v for k, v in e.items() if k not in STANDARD_KEYS}
        if e.get("suite") == suite and more:
            listed = ", ".join(f"{k}={_fmt_value(v)}" for k, v in more.items())
            lines.append(f"- {e['case']} ({e['impl']}, {e['threads']} thread(s)): {listed}")
    return ["", *lines] if lines else []


def replace_section(title: str, body: str, command: str, when: str | None = None) -> None:
    """Write one ``## title`` section of RESULTS.md (machine line, time, command, body)."""
    when = when or datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    section = f"## {title}\n\n{machine_line()}  \nRun: {when} UTC  \nCommand: `{command}`\n\n"
    section += body.rstrip("\n") + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")


def write_results(json_path: str, command: str) -> None:
    """Write one section per suite found in a pytest-benchmark JSON file."""
    data = json.loads(Path(json_path).read_text())
    note = "Ratio = baseline median / fastcore_cv median (> 1: fastcore_cv faster).\n\n"
    when = data.get("datetime", "")[:16].replace("T", " ") or None  # when it was measured
    for suite, table in suite_tables(data).items():
        replace_section(suite, note + table, command, when)


if __name__ == "__main__":
    write_results(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "make bench")

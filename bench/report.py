"""Medians, ratios against each scenario's reference tool, the printed table, the JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
from typing import Any

from .tools import REPO, Run

ABOUT = (
    "Every server on 127.0.0.1 (loopback), started by `python -m bench`: these measure each "
    "client's own cost, not a network. Seconds, lower is better: the median of paired "
    "repetitions (every tool once per repetition, the order reversed every other one), "
    "low-high the fastest and slowest run; ratio = median / the reference tool's median, "
    "best_ratio = fastest run / the reference's fastest run."
)


def machine(conditions: str = "") -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_gib = round(int(f.readline().split()[1]) / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        mem_gib = None
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "dlutils_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "conditions": conditions,
    }


def describe(info: dict[str, Any]) -> str:
    text = f"{info['nproc']} × {info['cpu']}, {info['memory_gib']} GiB, Python {info['python']}"
    text += f", {info['system']}, {info['date']}"
    if info.get("dlutils_commit"):
        text += f", dlutils {info['dlutils_commit']}"
    return text + (f" ({info['conditions']})" if info.get("conditions") else "")


def summarise(scenario: Any, runs: dict[str, list[Run]], skipped: dict[str, str]) -> dict[str, Any]:
    """One benchmark group of the JSON: a result per tool, fastest first."""
    results: list[dict[str, Any]] = []
    for name, tool_runs in runs.items():
        failed = [r.error for r in tool_runs if r.error]
        if failed:
            results.append({"tool": name, "seconds": None, "note": f"failed: {failed[0]}"})
            continue
        results.append(
            {
                "tool": name,
                "runs": [round(r.seconds, 3) for r in tool_runs],
                "peak_rss_mb": round(max(r.peak_rss_mb for r in tool_runs), 1),
            }
        )
    results += [{"tool": n, "seconds": None, "note": why} for n, why in skipped.items()]
    group = {"id": scenario.id, "title": scenario.title, "reference": scenario.reference}
    return score({**group, "results": results})


def score(group: dict[str, Any]) -> dict[str, Any]:
    """Fill in each result's median, low-high and ratios from its ``runs``, fastest first.

    ``ratio`` divides medians; ``best_ratio`` divides the fastest runs, which on a busy
    machine are the runs least slowed by others (noise only ever adds time).
    """
    for r in group["results"]:
        if r.get("runs"):
            r["seconds"] = round(statistics.median(r["runs"]), 2)
            r["low"], r["high"] = round(min(r["runs"]), 2), round(max(r["runs"]), 2)
    ref = next((r for r in group["results"] if r["tool"] == group["reference"]), {})
    for r in group["results"]:
        if r.get("runs") and ref.get("runs"):
            r["ratio"] = round(statistics.median(r["runs"]) / statistics.median(ref["runs"]), 2)
            r["best_ratio"] = round(min(r["runs"]) / min(ref["runs"]), 2)
    group["results"].sort(key=lambda r: (not r.get("runs"), r.get("seconds") or 0))
    return group


def table(bench: dict[str, Any]) -> str:
    """The table ``python -m bench`` prints."""
    lines = [f"Machine: {describe(bench['machine'])}", ""]
    head = f"  {'tool':<24}{'median s':>9}{'low-high':>13}{'× ref':>7}{'best':>7}{'peak RSS':>10}"
    for group in bench["benchmarks"]:
        lines += [f"{group['id']}: {group['title']} (× {group['reference']})", head]
        for r in group["results"]:
            if r["seconds"] is None:
                lines.append(f"  {r['tool']:<24}{r.get('note', '')}")
                continue
            ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
            best = f"{r['best_ratio']:.2f}" if "best_ratio" in r else "-"
            spread = f"{r['low']:.2f}-{r['high']:.2f}"
            lines.append(
                f"  {r['tool']:<24}{r['seconds']:>9.2f}{spread:>13}{ratio:>7}{best:>7}"
                f"{r['peak_rss_mb']:>7.0f} MB"
            )
        lines.append("")
    if bench.get("memory"):
        lines.append("M: peak resident memory of dlutils")
        for m in bench["memory"]:
            got = f"{m['peak_rss_mb']:.0f} MB" if m.get("peak_rss_mb") is not None else m["note"]
            verdict = ""
            if m.get("peak_rss_mb") is not None:
                verdict = "ok" if m["peak_rss_mb"] <= m["target_mb"] else "OVER TARGET"
            took = f", {m['seconds']:.0f} s" if m.get("seconds") else ""
            lines.append(f"  {m['what']}: {got}{took} (target ≤ {m['target_mb']} MB) {verdict}")
    return "\n".join(lines).rstrip() + "\n"


def write(bench: dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(bench, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".part", path)

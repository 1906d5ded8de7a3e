"""Sphinx extension: draw ``_static/bench.png`` and write ``_generated/bench-table.rst``
from ``_static/bench.json`` when a build starts, so the chart and the table of the
performance page always show the same numbers as the JSON."""

from __future__ import annotations

import json
import os
from typing import Any

#: The JSON read, and what is written from it, relative to the source folder.
SOURCE = os.path.join("_static", "bench.json")
CHART = os.path.join("_static", "bench.png")
TABLE = os.path.join("_generated", "bench-table.rst")


def load(srcdir: str) -> dict[str, Any]:
    with open(os.path.join(srcdir, SOURCE), encoding="utf-8") as f:
        return json.load(f)


def shown(result: dict[str, Any]) -> str:
    """The time as the table shows it: ``3.13``, ``3.2-5.5``, or ``not measured``."""
    if result.get("seconds") is None and "low" not in result:
        return "not measured"
    if result.get("seconds") is None:
        return f"{result['low']:g}-{result['high']:g}"
    return f"{result['seconds']:g}"


def table(bench: dict[str, Any]) -> str:
    lines = []
    if bench.get("machine"):
        lines += [f"Measured on {machine(bench['machine'])}.", ""]
    lines += [".. list-table::", "   :header-rows: 1", "   :widths: 26 20 9 11 9 9 8 8", ""]
    lines += ["   * - Benchmark", "     - Tool", "     - Seconds (median)", "     - Low-high"]
    lines += ["     - × reference (medians)", "     - × reference (fastest runs)"]
    lines += ["     - Peak RSS (MB)", "     - Note"]
    for group in bench["benchmarks"]:
        for i, result in enumerate(group["results"]):
            title = group["title"]
            if group.get("reference"):
                title += f" (reference: {group['reference']})"
            low, high = result.get("low"), result.get("high")
            spread = f"{low:g}-{high:g}" if result.get("seconds") is not None and low else ""
            ratio = f"{result['ratio']:g}" if "ratio" in result else ""
            best = f"{result['best_ratio']:g}" if "best_ratio" in result else ""
            rss = f"{result['peak_rss_mb']:.0f}" if "peak_rss_mb" in result else ""
            lines.append(f"   * - {title if i == 0 else ''}".rstrip())
            lines.append(f"     - {result['tool']}")
            lines.append(f"     - {shown(result)}")
            for cell in (spread, ratio, best, rss, result.get("note", "")):
                lines.append(f"     - {cell}".rstrip())
    if bench.get("memory"):
        lines += ["", ".. list-table::", "   :header-rows: 1", "   :widths: 60 20 20", ""]
        lines += ["   * - Peak resident memory of dlutils", "     - MB", "     - Target (MB)"]
        for m in bench["memory"]:
            got = m.get("peak_rss_mb")
            lines.append(f"   * - {m['what']}")
            lines.append(f"     - {m.get('note', '') if got is None else f'{got:.0f}'}".rstrip())
            lines.append(f"     - ≤ {m['target_mb']}")
    return "\n".join(lines) + "\n"


def machine(info: dict[str, Any]) -> str:
    """``2 × AMD EPYC, 23.5 GiB, Python 3.11.7, ...``: the machine a run measured."""
    text = f"{info['nproc']} × {info['cpu']}, {info['memory_gib']} GiB of memory, "
    text += f"Python {info['python']}, {info['system']}, {info['date']}"
    if info.get("dlutils_commit"):
        text += f", dlutils at commit ``{info['dlutils_commit']}``"
    return text + (f" ({info['conditions']})" if info.get("conditions") else "")


def chart(bench: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = bench["benchmarks"]
    heights = [len(g["results"]) for g in groups]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(8, 1.2 + 0.45 * sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axes = axes[:, 0]
    for ax, group in zip(axes, groups, strict=True):
        names = [r["tool"] for r in group["results"]]
        for y, result in enumerate(group["results"]):
            is_dlutils = result["tool"].startswith("dlutils")
            color = "#d95f02" if is_dlutils else "#7570b3"
            value, low, high = result.get("seconds"), result.get("low"), result.get("high")
            if value is None and low is None:
                ax.text(0, y, "  not measured", va="center", fontsize=9, style="italic")
                continue
            ax.barh(y, value if value is not None else low, color=color, height=0.6)
            if low is not None:
                ax.plot([low, high], [y, y], color="black", linewidth=1.5)
                ax.plot(
                    [low, low],
                    [y - 0.15, y + 0.15],
                    [high, high],
                    [y - 0.15, y + 0.15],
                    color="black",
                    linewidth=1.5,
                )
            label = f" {shown(result)} s"
            if result.get("ratio") is not None:
                label += f"  ({result['ratio']:g} ×)"
            ax.text((high or value) * 1.02, y, label, va="center", fontsize=9)
        ax.set_yticks(list(range(len(names))), names)
        ax.set_ylim(len(names) - 0.4, -0.6)  # first row on top, room below the last
        ax.set_title(group["title"], fontsize=10, loc="left")
        right = max((r.get("high") or r.get("seconds") or 0) for r in group["results"]) or 1
        ax.set_xlim(0, right * 1.25)
        ax.tick_params(labelsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xlabel("seconds, median (lower is better; a whisker spans the runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def generate(app: Any) -> None:
    bench = load(app.srcdir)
    os.makedirs(os.path.join(app.srcdir, "_generated"), exist_ok=True)
    text = table(bench)
    target = os.path.join(app.srcdir, TABLE)
    old = open(target, encoding="utf-8").read() if os.path.exists(target) else None
    if old != text:  # rewrite only on change, so Sphinx does not re-read the page each time
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    png = os.path.join(app.srcdir, CHART)
    if not os.path.exists(png) or os.path.getmtime(png) < os.path.getmtime(
        os.path.join(app.srcdir, SOURCE)
    ):
        chart(bench, png)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

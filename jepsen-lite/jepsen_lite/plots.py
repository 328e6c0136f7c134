"""latency.png and rate.png for a run's out dir (matplotlib, Agg backend).

Owns: drawing each operation's latency over time, and throughput over time by
outcome, with the nemesis periods shaded and named. Times are seconds since the
history's first event.

Must never: need a display, change the history, or fail a run because a plot could
not be drawn (the caller logs and goes on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jepsen_lite.history import pair_operations
from jepsen_lite.nemesis import Period

COLORS = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef6c00"}
FAULT_COLORS = ["#90caf9", "#ce93d8", "#ffcc80", "#a5d6a7", "#f48fb1", "#b0bec5", "#fff59d",
                "#80cbc4"]


def _shade(ax: Any, periods: Sequence[Period], end: float) -> None:
    colors: dict[str, str] = {}
    for p in periods:
        first = p.f not in colors
        color = colors.setdefault(p.f, FAULT_COLORS[len(colors) % len(FAULT_COLORS)])
        stop = p.stop if p.stop is not None else end
        ax.axvspan(p.start, stop, color=color, alpha=0.35, lw=0, label=p.f if first else None)


def write_plots(out: Path, events: list[dict[str, Any]], periods: Sequence[Period]) -> None:
    ops = pair_operations(events)
    times = [e["time"] for e in events if e.get("time") is not None]
    t0 = min(times) if times else 0
    end = (max(times) - t0) / 1e9 if times else 1.0

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    _shade(ax, periods, end)
    for status in ("ok", "fail", "info"):
        xs, ys = [], []
        for op in ops:
            if op.status == status and op.invoke_time is not None:
                done = op.complete_time if op.complete_time is not None else times[-1]
                xs.append((op.invoke_time - t0) / 1e9)
                ys.append(max(1e-2, (done - op.invoke_time) / 1e6))
        if xs:
            ax.scatter(xs, ys, s=4, c=COLORS[status], label=f"{status} ({len(xs)})",
                       alpha=0.7, lw=0)
    ax.set_yscale("log")
    ax.set_xlim(0, max(end, 1e-3))
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("operation latency (shaded: nemesis active)")
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    fig.tight_layout()
    fig.savefig(out / "latency.png")
    plt.close(fig)

    bins = max(1, int(end) + 1)
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    _shade(ax, periods, end)
    for status in ("ok", "fail", "info"):
        counts = [0] * bins
        for op in ops:
            t = op.complete_time if op.complete_time is not None else None
            if op.status == status and t is not None:
                counts[min(bins - 1, int((t - t0) / 1e9))] += 1
        if any(counts):
            ax.plot([i + 0.5 for i in range(bins)], counts, color=COLORS[status],
                    label=status, lw=1.2)
    ax.set_xlim(0, max(end, 1e-3))
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("completions per second")
    ax.set_title("throughput by outcome (shaded: nemesis active)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rate.png")
    plt.close(fig)

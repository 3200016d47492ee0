"""Latency against concurrency, one line per scenario, as a PNG (matplotlib, optional).

matplotlib is the `bench` extra (`pip install -e '.[bench]'`); without it
the plot is skipped and the reason returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.suite import BASELINES, SCENARIOS


def plot(result: dict[str, Any], out: Path) -> str | None:
    """Write the PNG; None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for name in SCENARIOS:
        rows = sorted(
            (r for r in result["closed"] if r["scenario"] == name), key=lambda r: r["calls"]
        )
        if not rows:
            continue
        style = "--" if name in BASELINES else "-"
        x = [r["calls"] for r in rows]
        for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            ax.plot(x, [r[key] for r in rows], style, marker="o", markersize=3, label=name)
    for ax, title in zip(axes, ("p50", "p99"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent calls (closed loop)")
        ax.set_ylabel(f"{title} turn latency, ms")
        ax.set_title(f"{title} latency per turn")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"ivr-gateway bench {result['started_utc']}: "
        "gateway front doors (solid), baselines (dashed)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return None

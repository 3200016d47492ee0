"""`python -m bench [--quick] [flags]`: the benchmark suite (see docs/performance.md).

Prints the table, writes the full result to bench/results/<UTC timestamp>.json
and the latency plot beside it (.png, with the `bench` extra). `--only rps`
and `--only memory` run the two single measurements of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ROOT, memory, report, rpc_turn, suite, tables
from bench.plot import plot

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = {
    "levels": "1,64",
    "duration": 0.7,
    "warmup": 0.3,
    "open_duration": 0.7,
    "scale_conversations": 1000,
    "scale_duration": 0.7,
    "scale_rounds": 1,
    "open_think": 0.05,
}


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or any(not 1 <= n <= 4096 for n in levels):
        raise argparse.ArgumentTypeError("levels: comma-separated numbers from 1 to 4096")
    return levels


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = p.add_argument
    add("--quick", action="store_true", help="a smoke run, under a minute")
    add("--levels", type=_levels, help="closed-loop concurrent calls (1,16,64,256,1024)")
    add("--scenarios", help=f"comma-separated subset of {','.join(suite.SCENARIOS)}")
    add("--duration", type=float, help="measured seconds per slice (6)")
    add("--warmup", type=float, help="seconds before each slice is measured (1)")
    add("--think-ms", type=float, default=0.0, help="closed loop: pause between turns (0)")
    add("--open-rate", type=float, default=1000.0, help="open loop: turns/s offered (1000)")
    add("--open-think-ms", type=float, help="open loop: between turns (200; 50 with --quick)")
    add("--open-duration", type=float, help="open loop: measured seconds, 0 skips it (8)")
    add("--scale-conversations", type=int, help="idle conversations, 0 skips scale (10000)")
    add("--scale-rate", type=float, default=1000.0, help="scale: steady turns/s (1000)")
    add("--scale-duration", type=float, help="scale: measured seconds per load (8)")
    add("--scale-rounds", type=int, help="scale: rounds of with/without (2)")
    add("--no-plot", action="store_true", help="skip the PNG")
    add("--out", type=Path, help="write the JSON here instead of bench/results/")
    add("--only", choices=("rps", "memory"), help="one single measurement (bench/README.md)")
    add("--rounds", type=int, default=9, help="--only rps: interleaved rounds")
    add("--connections", type=int, default=64, help="--only rps: keep-alive connections")
    add("--conversations", type=int, default=100_000, help="--only memory: conversations")
    return p


def plan_from(args: argparse.Namespace) -> suite.Plan:
    preset: dict[str, Any] = dict(QUICK) if args.quick else {}
    given = {
        k: getattr(args, k)
        for k in (
            "levels",
            "duration",
            "warmup",
            "open_duration",
            "scale_conversations",
            "scale_duration",
            "scale_rounds",
        )
        if getattr(args, k) is not None
    }
    values = {**preset, **given}
    if args.open_think_ms is not None:
        values["open_think"] = args.open_think_ms / 1e3
    if isinstance(values.get("levels"), str):
        values["levels"] = _levels(values["levels"])
    if args.scenarios:
        names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        unknown = set(names) - set(suite.SCENARIOS)
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        values["scenarios"] = names
    return suite.Plan(
        think=args.think_ms / 1e3,
        open_rate=args.open_rate,
        scale_rate=args.scale_rate,
        **values,
    )


def _host() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
    }


def _single(args: argparse.Namespace, result: dict[str, Any]) -> tuple[list[str], bool]:
    lines: list[str] = []
    if args.only == "rps":
        result["rps"] = rpc_turn.run(
            args.duration or 18.0,
            args.connections,
            rounds=args.rounds,
            log=lambda s: print(s, file=sys.stderr),
        )
        return tables.rps_table(result["rps"]), result["rps"]["valid"]
    result["memory"] = memory.run(args.conversations)
    lines += tables.memory_table(result["memory"])
    return lines, True


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.gmtime()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", started)
    result: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
        "argv": sys.argv[1:] if argv is None else argv,
        "host": _host(),
    }
    t0 = time.monotonic()
    if args.only:
        lines, valid = _single(args, result)
        text = "\n".join(lines)
    else:
        result.update(suite.run(plan_from(args)))
        text = report.render(result)
        valid = not any(r["errors"] for r in result["closed"] + result["open"])
    result["wall_s"] = round(time.monotonic() - t0, 1)
    out = args.out or RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(text)
    print(f"\nwall time {result['wall_s']:.0f} s; written: {out}")
    if not args.only and not args.no_plot:
        why = plot(result, out.with_suffix(".png"))
        print(why or f"plot: {out.with_suffix('.png')}")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench [--duration S] [--connections N] [--conversations N] [--only rps|memory]`.

Prints a small table and writes the full result as JSON to
bench/results/<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import memory, rpc_turn

RESULTS = Path(__file__).resolve().parent / "results"

LABELS = {
    "starlette": "starlette",
    "gateway-signed": "gateway signed",
    "gateway-unsigned": "gateway unsigned",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def rps_table(r: dict[str, Any]) -> list[str]:
    pin = "server CPU 0, generator CPU 1" if r["pinned"] else "not pinned"
    lines = [
        f"rps: Dialogue turn, c{r['connections']}, {r['rounds']} interleaved rounds of "
        f"{r['slice_s']:g} s per server (after {r['warmup_s']:g} s warm-up each), {pin}, "
        f"body {r['response_bytes']} B",
        f"{'round':<7}{'server':<19}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'srv cpu':>9}{'gen cpu':>9}{'ratio':>8}",
    ]
    per_round = r["ratios_per_round"]
    for k in range(r["rounds"]):
        for name, runs in r["slices"].items():
            run = runs[k]
            ratios = per_round.get(name)
            ratio = ratios[k] if ratios and k < len(ratios) else None
            errors = sum(run["errors"].values())
            lines.append(
                f"{k + 1:<7}{LABELS[name]:<19}{run['rps']:>9.0f}{run['p50_ms']:>9.2f}"
                f"{run['p99_ms']:>9.2f}{errors:>8}{_pct(run['server_cpu']):>9}"
                f"{_pct(run['generator_cpu']):>9}{'' if ratio is None else f'{ratio:.2f}x':>8}"
            )
            if run["errors"]:
                lines.append(f"  errors by kind: {run['errors']}")
            if run["exhausted_connections"]:
                lines.append(
                    f"  ran out of pre-built requests on {run['exhausted_connections']} connections"
                )
    lines.append("median over rounds:")
    for name, m in r["summary"].items():
        ratio = {"gateway-signed": r["ratio_signed"], "gateway-unsigned": r["ratio_unsigned"]}.get(
            name
        )
        lines.append(
            f"{'':<7}{LABELS[name]:<19}{m['rps_median']:>9.0f}{m['p50_ms_median']:>9.2f}"
            f"{m['p99_ms_median']:>9.2f}{'':>8}{_pct(m['server_cpu_median']):>9}"
            f"{_pct(m['generator_cpu_median']):>9}{'' if ratio is None else f'{ratio:.2f}x':>8}"
        )
    lines.append(
        "ratio = gateway req/s / starlette req/s of the same round; the summary is the median"
        + ("" if r["valid"] else "  ** INVALID: errors or exhausted requests **")
    )
    return lines


def memory_table(m: dict[str, Any]) -> list[str]:
    target = m["target_bytes"]
    lines = [f"memory: {m['conversations']} idle conversations (each begun + one turn)"]
    for label, key in (
        ("tracemalloc", "traced_bytes_per_conversation"),
        ("RSS delta", "rss_bytes_per_conversation"),
    ):
        value = m[key]
        verdict = "ok" if value <= target else "OVER"
        lines.append(f"  {label:<12}{value:>9.0f} B/conversation  (target <= {target}: {verdict})")
    if m["answered"] != m["conversations"]:
        lines.append(f"  ** only {m['answered']} turns were answered **")
    top = ", ".join(f"{t['where']} {t['bytes_per_conversation']:.0f}" for t in m["top_sites"][:5])
    lines.append(f"  top sites (B/conv): {top}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=18.0, help="timed seconds per server, over all rounds"
    )
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--conversations", type=int, default=100_000, help="for memory")
    parser.add_argument("--only", choices=("rps", "memory"), help="run one measurement")
    args = parser.parse_args(argv)

    started = time.gmtime()
    result: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
        "args": vars(args),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    lines: list[str] = []
    if args.only in (None, "rps"):
        print("measuring rps ...", file=sys.stderr)
        result["rps"] = rpc_turn.run(
            args.duration,
            args.connections,
            rounds=args.rounds,
            log=lambda s: print(s, file=sys.stderr),
        )
        lines += rps_table(result["rps"])
    if args.only in (None, "memory"):
        print("measuring memory ...", file=sys.stderr)
        result["memory"] = memory.run(args.conversations)
        lines += ([""] if lines else []) + memory_table(result["memory"])

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%dT%H%M%SZ', started)}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"\nwritten: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    valid = result.get("rps", {}).get("valid", True)
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())

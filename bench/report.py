"""The suite's table and ratios, from its JSON-ready result."""

from __future__ import annotations

import math
from typing import Any

from bench.suite import SCENARIOS

# (label, numerator scenario, denominator scenario, what is compared)
RATIOS = (
    ("gateway/Starlette (navigator, RPC)", "rpc", "starlette"),
    ("gateway/nginx (pooled bot, RPC)", "rpc-bot", "nginx"),
    ("websocket/RPC", "websocket", "rpc"),
    ("ARI/httapi", "asterisk", "httapi"),
)
_HEAD = (
    f"{'scenario':<11}{'load':>10}{'turns/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
    f"{'p99.9 ms':>10}{'CPU s/1k':>10}{'RSS MB':>8}{'gen cpu':>9}{'errors':>8}"
)


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _row(r: dict[str, Any], load: str) -> str:
    errors = sum(r["errors"].values())
    return (
        f"{r['scenario']:<11}{load:>10}{r['turns_per_s']:>10,.0f}{_f(r['p50_ms'], '.2f'):>9}"
        f"{_f(r['p90_ms'], '.2f'):>9}{_f(r['p99_ms'], '.2f'):>9}{_f(r['p999_ms'], '.2f'):>10}"
        f"{_f(r['cpu_s_per_1k_turns'], '.3f'):>10}{r['rss_mb']:>8.0f}"
        f"{r['generator_cpu'] * 100:>8.0f}%{errors:>8}"
    )


def _order(r: dict[str, Any]) -> tuple[int, float]:
    name = r["scenario"]
    return (SCENARIOS.index(name) if name in SCENARIOS else 99, r["calls"] or 0)


def ratios(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per ratio and concurrency level: turns/s, p99 and CPU per turn, numerator/denominator."""
    by = {(r["scenario"], r["calls"]): r for r in result["closed"]}
    levels = sorted({r["calls"] for r in result["closed"]})
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for label, a, b in RATIOS:
        per: dict[str, dict[str, float | None]] = {}
        for level in levels:
            x, y = by.get((a, level)), by.get((b, level))
            if x is None or y is None:
                continue
            per[str(level)] = {
                k: round(x[k] / y[k], 3) if x[k] and y[k] else None
                for k in ("turns_per_s", "p99_ms", "cpu_s_per_1k_turns")
            }
        if per:
            out[label] = per
    return out


def render(result: dict[str, Any]) -> str:
    lines = [
        "closed loop: scripted calls, each caller starting its next call at once "
        f"(think {result['plan']['think'] * 1e3:g} ms); {result['turns_per_call']} turns per call",
        _HEAD,
    ]
    for r in sorted(result["closed"], key=_order):
        lines.append(_row(r, f"c{r['calls']}"))
    if result["open"]:
        plan = result["plan"]
        lines += [
            "",
            f"open loop: {plan['open_rate']:g} turns/s offered, think {plan['open_think'] * 1e3:g} "
            "ms, latency from the intended send time",
            _HEAD + f"{'lag p99':>9}",
        ]
        for r in result["open"]:
            lag = _f(r.get("send_lag_p99_ms"), ".2f")
            lines.append(_row(r, f"{r['rate']:g}/s") + f"{lag:>9}")
    lines += ["", "ratios (numerator/denominator at the same concurrency): turns/s, p99, CPU/turn"]
    table = ratios(result)
    result["ratios"] = table
    for label, per in table.items():
        cells = "  ".join(
            f"c{level} {_f(v['turns_per_s'], '.2f')}x/{_f(v['p99_ms'], '.2f')}x/"
            f"{_f(v['cpu_s_per_1k_turns'], '.2f')}x"
            for level, v in per.items()
        )
        lines.append(f"  {label:<36}{cells}")
    gen = result["generator"]
    lines += [
        "",
        f"generator: {gen['turns_per_s']:,.0f} turns/s against the raw floor (c64) at "
        f"{gen['generator_cpu'] * 100:.0f}% of its core (ceiling ~{gen['ceiling_turns_per_s']:,.0f}"
        f" turns/s); at most {(gen['max_share_in_sweep'] or 0) * 100:.0f}% in any other slice",
    ]
    sc = result.get("scale")
    if sc:
        base = "/".join(f"{x['base']['p99_ms']:.2f}" for x in sc["rounds"])
        loaded = "/".join(f"{x['loaded']['p99_ms']:.2f}" for x in sc["rounds"])
        verdict = "met" if sc["met"] else "NOT met"
        lines += [
            f"scale: {sc['steady_rate']:g} turns/s steady (open loop); p99 {base} ms with "
            f"{sc['base']} idle, {loaded} ms with {sc['conversations']:,} idle; ratio "
            f"{sc['p99_ratio']:.2f}x (target <= {sc['target']}x: {verdict})",
            f"memory per idle conversation: {_f(sc['bytes_per_conversation'], ',.0f')} B of the "
            "live gateway's RSS growth; in a fresh process (bench.memory) "
            f"{_f(sc['fresh_process']['rss_bytes_per_conversation'], ',.0f')} B RSS, "
            f"{_f(sc['fresh_process']['traced_bytes_per_conversation'], ',.0f')} B traced",
        ]
    lines.append(f"[store] enabled: {result.get('store_enabled')}; pinned: {result['pinned']}")
    return "\n".join(lines)

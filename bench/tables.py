"""Tables of the single measurements (`--only rps`, `--only memory`)."""

from __future__ import annotations

from typing import Any

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

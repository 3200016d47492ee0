"""Running one slice of load against one target of the stand, and summarising it."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from bench import callgen
from bench.ari_calls import AriTransport
from bench.callgen import HttpTransport, Load, Slice, Transport
from bench.fronts import Templates
from bench.procs import cpu_seconds
from bench.rpc_turn import HOST
from bench.scripts import Script, scripts
from bench.stand import Stand, Target, rss_bytes
from bench.ws_calls import WsTransport

OPEN_CONNECTIONS = 4096  # open loop: the most connections (and so calls in flight) at once
ARI_SLACK = 30.0  # the fake's loop: how long past the slice's own limits to wait for it

_templates: dict[tuple[str, int, str, int], Templates] = {}


def _transport(target: Target, load: Load, plays: tuple[Script, ...]) -> Transport:
    calls = load.calls if load.mode == "closed" else 256
    if target.front == "websocket":
        return WsTransport(target.port, plays, calls)
    key = (target.front, target.port, target.instance, id(plays))
    if key not in _templates:
        _templates[key] = Templates.build(target.front, target.port, plays, target.instance)
    limit = load.calls if load.mode == "closed" else OPEN_CONNECTIONS
    return HttpTransport(HOST, target.port, _templates[key], limit)


def open_warmup(warmup: float, think: float) -> float:
    """Open loop: long enough for the first calls to reach their last turn (full load)."""
    return max(warmup, think * (max(len(p) for p in scripts()) - 1))


def nearest_rank(ordered: list[float], q: float) -> float:
    """The q-th percentile (0-100] of sorted values, nearest-rank; nan when empty."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(s: Slice, target: Target, load: Load) -> dict[str, Any]:
    """The JSON row of a slice: latency percentiles in ms, rates, CPU and RSS."""
    lat = sorted(s.latencies)
    ms = {
        f"{k}_ms": round(nearest_rank(lat, q) * 1e3, 3)
        for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9), ("max", 100))
    }
    window = s.window or math.nan
    srv = s.server_cpu_s
    row: dict[str, Any] = {
        "scenario": target.name,
        "mode": load.mode,
        "calls": load.calls if load.mode == "closed" else None,
        "rate": load.rate if load.mode == "open" else None,
        "think_ms": load.think * 1e3,
        "turns": s.turns,
        "window_s": round(window, 3),
        "turns_per_s": round(s.turns / window, 1) if s.turns else 0.0,
        **ms,
        "errors": s.errors,
        "calls_started": s.calls_started,
        "calls_unfinished": s.calls_unfinished,
        "generator_cpu": round(s.gen_cpu_s / window, 3),
        "server_cpu": None if srv is None else round(srv / window, 3),
        "cpu_s_per_1k_turns": None if srv is None or not s.turns else round(srv / s.turns * 1e3, 4),
        "rss_mb": round(rss_bytes(target.pid) / 2**20, 1),
        "pid": target.pid,
    }
    if s.lags:
        lags = sorted(s.lags)
        row["send_lag_p99_ms"] = round(nearest_rank(lags, 99) * 1e3, 3)
    return row


def measure(
    st: Stand,
    runner: asyncio.Runner,
    name: str,
    load: Load,
    plays: tuple[Script, ...],
    tag: str,
) -> Slice:
    """One run of `load` against the target `name`; the raw slice."""
    target = st.targets[name]
    turns = [len(p) for p in plays]
    pid = target.pid

    def cpu() -> float:
        return cpu_seconds(pid)

    if target.front == "asterisk":
        ari = AriTransport(st.fake, target.port, plays)
        limit = load.warmup + load.duration + 2 * load.drain + ARI_SLACK
        return st.fake._run(callgen.run(ari, load, turns, tag, cpu), timeout=limit)
    return runner.run(callgen.run(_transport(target, load, plays), load, turns, tag, cpu))


def run_slice(
    st: Stand,
    runner: asyncio.Runner,
    name: str,
    load: Load,
    plays: tuple[Script, ...],
    tag: str,
) -> dict[str, Any]:
    """`measure`, summarised."""
    return summarize(measure(st, runner, name, load, plays, tag), st.targets[name], load)

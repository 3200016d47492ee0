"""Measurement 4: a turn through ARI (front=asterisk) against an httapi turn, same run.

The fake Asterisk (tests/fake_ari.py) runs in this process, on the
generator's core, with playback time scaled to almost nothing. Each of C
simulated calls keys `1#` (the demo's balance choice, ended by '#') as soon
as the answer to its previous turn has started playing; a turn's latency is
from the first digit to the gateway's `POST /channels/{id}/play` of the
answer. The same gateway also serves FreeSWITCH httapi turns, driven by the
closed-loop generator at the same concurrency, in interleaved rounds.

Also reported: the gateway's CPU per ARI turn, and the TTS cache hit's cost
(bench.tts_cache measures it) as a share of it.
Run: `python -m bench.ari_turn [--calls C] [--duration S] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import gwconfig, tts_cache
from bench.httapi_turn import PASSWORD, USER, first_request, turn_request
from bench.loadgen import fetch, run_load
from bench.procs import LOADGEN_CPU, Servers, can_pin, cpu_seconds, free_port
from bench.rpc_turn import HOST, _median
from tests.fake_ari import FakeAsterisk

APP = "ivrgw"


def _gateway(servers: Servers, tmp: Path, ari_port: int) -> Any:
    port = free_port()
    config = gwconfig.write(tmp / "gw", port=port, auth=True)
    adapters = {
        "freeswitch": gwconfig.freeswitch_adapter(USER, PASSWORD),
        "asterisk": gwconfig.asterisk_adapter(ari_port, USER, PASSWORD, APP, port, tmp / "tts"),
    }
    gwconfig.update(config, {"adapters": adapters})
    return servers.gateway("gateway", config, port, ready="/healthz")


def _ari_round(fake: FakeAsterisk, calls: int, seconds: float) -> tuple[int, list[float], float]:
    """C calls keying turns back to back for `seconds`: (turns, latencies, wall)."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    turns = 0
    lock = threading.Lock()

    def caller() -> None:
        nonlocal turns
        channel = fake.originate(caller="13800000000", args=["demo", "balance=42"])
        channel.wait_for(lambda ch: len(ch.playbacks) >= 1, timeout=30)
        mine: list[float] = []
        play = f"/ari/channels/{channel.id}/play"
        while time.monotonic() < stop:
            seen = len(channel.playbacks)
            started = time.perf_counter()
            channel.press("1#", gap_ms=0, wait=False)
            # Woken by the fake on each event and REST answer; the latency ends when the
            # fake received the answer's POST .../play, not when this thread woke.
            channel.wait_for(lambda ch, n=seen: len(ch.playbacks) > n, timeout=10)
            answered = next(
                r.at for r in reversed(fake.requests) if r.path == play and r.method == "POST"
            )
            mine.append(answered - started)
        channel.hang_up()
        with lock:
            latencies.extend(mine)
            turns += len(mine)

    threads = [threading.Thread(target=caller) for _ in range(calls)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return turns, latencies, time.perf_counter() - began


def run(calls: int, duration: float, rounds: int, log: Any = print) -> dict[str, Any]:
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    slice_s = duration / rounds
    out: dict[str, list[dict[str, Any]]] = {"asterisk": [], "httapi": []}
    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-ari-") as tmpdir,
        FakeAsterisk(
            username=USER, password=PASSWORD, app=APP, time_scale=0.0001, min_playback_ms=1
        ) as fake,
        Servers(Path(tmpdir), pin) as servers,
    ):
        gw = _gateway(servers, Path(tmpdir), fake.port)
        fake.wait_connected(timeout=20)
        per_round = int(30_000 * (slice_s + 2.0) / calls) + 1
        for i in range(calls):
            fetch(HOST, gw.port, first_request(gw.port, f"ari-bench-{i}"))
        next_turn = 1
        for r in range(rounds):
            for name in ("asterisk", "httapi") if r % 2 == 0 else ("httapi", "asterisk"):
                log(f"  round {r + 1}/{rounds}: {name} ...")
                cpu0 = cpu_seconds(gw.pid)
                if name == "asterisk":
                    turns, lat, wall = _ari_round(fake, calls, slice_s)
                    cpu = cpu_seconds(gw.pid) - cpu0
                    lat.sort()
                    out[name].append(
                        {
                            "round": r + 1,
                            "rps": turns / wall,
                            "p50_ms": statistics.median(lat) * 1e3 if lat else None,
                            "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3 if lat else None,
                            "cpu_us_per_turn": cpu / turns * 1e6 if turns else None,
                        }
                    )
                else:
                    reqs = [
                        [
                            turn_request(gw.port, f"ari-bench-{i}", t)
                            for t in range(next_turn, next_turn + per_round)
                        ]
                        for i in range(calls)
                    ]
                    next_turn += per_round
                    stats = run_load(
                        HOST, gw.port, reqs, slice_s, warmup=0.5, cpu=LOADGEN_CPU if pin else None
                    )
                    cpu = cpu_seconds(gw.pid) - cpu0
                    out[name].append(
                        {
                            "round": r + 1,
                            "rps": stats.rps,
                            "p50_ms": stats.percentile(50) * 1e3,
                            "p99_ms": stats.percentile(99) * 1e3,
                            "cpu_us_per_turn": cpu / max(1, stats.requests) * 1e6,
                        }
                    )
    rps = [a["rps"] / h["rps"] for a, h in zip(out["asterisk"], out["httapi"], strict=True)]
    p99 = [
        a["p99_ms"] / h["p99_ms"]
        for a, h in zip(out["asterisk"], out["httapi"], strict=True)
        if a["p99_ms"] and h["p99_ms"]
    ]
    hit_us = statistics.median(
        asyncio.run(tts_cache.measure(20_000, 5))["cache hit (await prompt)"]
    )
    ari_cpu = _median([a["cpu_us_per_turn"] or 0 for a in out["asterisk"]])
    return {
        "calls": calls,
        "rounds": rounds,
        "tts_hit_us": hit_us,
        "tts_hit_share": hit_us / ari_cpu if ari_cpu else None,
        "pinned": pin,
        "slices": out,
        "asterisk_over_httapi_rps": _median(rps),
        "asterisk_over_httapi_p99": _median(p99),
        "asterisk_cpu_us_per_turn": ari_cpu,
        "httapi_cpu_us_per_turn": _median([h["cpu_us_per_turn"] or 0 for h in out["httapi"]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ari_turn")
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per front")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = run(args.calls, args.duration, args.rounds)
    print(f"{'round':<7}{'front':<10}{'turns/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu µs/turn':>13}")
    for name, rows in result["slices"].items():
        for x in rows:
            print(
                f"{x['round']:<7}{name:<10}{x['rps']:>9.0f}{x['p50_ms'] or 0:>9.2f}"
                f"{x['p99_ms'] or 0:>9.2f}{x['cpu_us_per_turn'] or 0:>13.1f}"
            )
    print(
        f"asterisk / httapi: turns/s {result['asterisk_over_httapi_rps']:.2f}x, "
        f"p99 {result['asterisk_over_httapi_p99']:.2f}x; gateway CPU per ARI turn "
        f"{result['asterisk_cpu_us_per_turn']:.0f} µs "
        f"(httapi {result['httapi_cpu_us_per_turn']:.0f} µs)"
    )
    share = result["tts_hit_share"]
    print(
        f"TTS cache hit: {result['tts_hit_us']:.2f} µs, "
        f"{share * 100 if share is not None else float('nan'):.2f} % of an ARI turn's gateway CPU"
        " (target: at most 5 %)"
    )


if __name__ == "__main__":
    main()

"""What conversation records cost a turn: the same gateway with `[store]` on and off.

`python -m bench.records_turn [--calls 64] [--rate 3000] [--slice 6] [--rounds 6]
[--writers idle,nice]`

Gateways (RPC, auth off, the demo instance), identical but for `[store]`,
pinned to CPU 0; the generator on CPU 1. One records nothing (`enabled =
false`); one records for each `--writers` entry: `idle`, the writer thread
under SCHED_IDLE (the default, `writer_idle = true`), or `nice`, at nice 19
(`writer_idle = false`). Each of `calls` keep-alive connections is one live
conversation sending Dialogue turns on a fixed schedule, together `rate`
turns per second (open loop: a turn's latency is measured from the time it
was due, so a stall is charged to every turn it delayed). Every turn of a
recording gateway writes a Round record through its writer thread. Each
round runs every gateway once, in an order that rotates from round to
round; the figure is the median over rounds of p99(records) / p99(off) of
the same round. A closed-loop slice per round (as many turns as the
gateway can answer) gives the throughput ratio as well. It leaves a backlog
of records (a saturated core gives an idle writer little); before each
paced slice the bench waits for every recording gateway's store queue to
drain, and reports the wait (`drain_s`).

At the end each recording gateway is stopped (its lifespan flushes the
queue) and its database is counted: every answered turn must be there, and
`ivrgw_records_dropped_total` must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import uvloop

from bench import gwconfig
from bench.loadgen import fetch, parse_response, run_load
from bench.procs import LOADGEN_CPU, Server, Servers, can_pin, cpu_seconds, free_port
from bench.rpc_turn import HOST, Signer, begin_params, conversation, turn_params

WARMUP = 1.0


class _Paced(asyncio.Protocol):
    """One connection sending `request` every `interval` seconds, from `t0`."""

    def __init__(
        self, request: bytes, t0: float, interval: float, t_end: float, lat: list[float]
    ) -> None:
        self.request = request
        self.t0 = t0
        self.interval = interval
        self.t_end = t_end
        self.lat = lat
        self.buf = bytearray()
        self.n = 0
        self.errors = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self._schedule()

    def _due(self) -> float:
        return self.t0 + self.n * self.interval

    def _schedule(self) -> None:
        due = self._due()
        if due >= self.t_end:
            if not self.done.done():
                self.done.set_result(None)
            return
        loop = asyncio.get_running_loop()
        delay = due - time.perf_counter()
        if delay > 0:
            loop.call_later(delay, self._send)
        else:
            self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = parse_response(self.buf)
        if parsed is None:
            return
        status, _, end = parsed
        del self.buf[:end]
        if status != 200:
            self.errors += 1
        # Latency from the time the turn was due, not from when it was sent.
        self.lat.append(time.perf_counter() - self._due())
        self.n += 1
        self._schedule()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _paced(port: int, requests: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    interval = len(requests) / rate
    t0 = time.perf_counter() + 0.2
    warm: list[float] = []
    lat: list[float] = []
    conns: list[_Paced] = []
    # Warm-up first, then the measured window, on the same connections' schedule.
    for i, req in enumerate(requests):
        # Spread the connections' phases across one interval.
        start = t0 + interval * i / len(requests)
        proto = _Paced(req, start, interval, start + WARMUP, warm)
        await loop.create_connection(lambda p=proto: p, HOST, port)  # type: ignore[misc]
        conns.append(proto)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), WARMUP + 10)
    except TimeoutError:
        raise RuntimeError("warm-up stalled: no answers") from None
    t1 = time.perf_counter() + 0.05
    for i, c in enumerate(conns):
        c.t0 = t1 + interval * i / len(requests)
        c.t_end = c.t0 + seconds
        c.n = 0
        c.lat = lat
        c.done = loop.create_future()
        c._schedule()
    await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), seconds + 10)
    errors = sum(c.errors for c in conns)
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q / 100 * len(lat)))] * 1e3 if lat else 0.0

    return {
        "turns": len(lat),
        "errors": errors,
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
        "p999_ms": round(pct(99.9), 3),
    }


# How the writer thread is scheduled: `[store] writer_idle`.
WRITERS = {"idle": True, "nice": False}


def _gateway(servers: Servers, tmp: Path, name: str, writer: str) -> Server:
    """A gateway recording with its writer thread scheduled as `writer` says
    ("idle": SCHED_IDLE, "nice": nice 19), or recording nothing ("off")."""
    port = free_port()
    config = gwconfig.write(tmp / name, port=port, auth=False)
    store: dict[str, Any] = {
        "enabled": writer != "off",
        "path": str((tmp / name / "var" / "gateway.db").resolve()),
        "exports_dir": str((tmp / name / "var" / "exports").resolve()),
    }
    if writer != "off":
        store["writer_idle"] = WRITERS[writer]
    gwconfig.update(config, {"store": store})
    return servers.gateway(name, config, port)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _metric(server: Server, name: str) -> float:
    _, body = fetch(HOST, server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def _drained(server: Server, timeout: float = 120.0) -> float:
    """Wait until the gateway's writer has applied its backlog (the closed-loop
    slices leave one); the seconds it took. A paced slice then measures a
    gateway keeping up with its records, not one paying off an earlier burst."""
    t0 = time.monotonic()
    while _metric(server, "ivrgw_store_queue_depth") > 0:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{server.name}: the store queue did not drain in {timeout:g} s")
        time.sleep(0.1)
    return round(time.monotonic() - t0, 2)


def run(
    calls: int,
    rate: float,
    slice_s: float,
    rounds: int,
    writers: tuple[str, ...] = ("idle",),
    log: Any = print,
) -> dict[str, Any]:
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    names = (*writers, "off")
    out: dict[str, Any] = {
        "calls": calls,
        "rate": rate,
        "slice_s": slice_s,
        "rounds": rounds,
        "pinned": pin,
        "writers": list(writers),
        "paced": {name: [] for name in names},
        "closed": {name: [] for name in names},
    }
    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-records-") as tmpdir,
        Servers(Path(tmpdir), pin) as servers,
    ):
        tmp = Path(tmpdir)
        gws = {name: _gateway(servers, tmp, name, name) for name in names}
        reqs: dict[str, list[bytes]] = {}
        for name, gw in gws.items():
            signer = Signer(gw.port)
            for i in range(calls):
                status, body = fetch(HOST, gw.port, signer.request(begin_params(conversation(i))))
                if status != 200:
                    raise RuntimeError(f"{name}: BeginDialogue answered {status}: {body[:200]!r}")
            reqs[name] = [signer.request(turn_params(conversation(i))) for i in range(calls)]
        for r in range(rounds):
            # Each gateway takes each place in the order in turn.
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                gw = gws[name]
                # Every writer, not only this gateway's: one draining
                # during another's slice would load the shared core.
                drain = sum(_drained(gws[w]) for w in writers)
                log(f"  round {r + 1}/{rounds}: records {name}, paced {rate:g}/s ...")
                cpu0 = cpu_seconds(gw.pid)
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    paced = runner.run(_paced(gw.port, reqs[name], rate, slice_s))
                paced["server_cpu"] = round((cpu_seconds(gw.pid) - cpu0) / slice_s, 3)
                paced["drain_s"] = drain
                out["paced"][name].append(paced)
                log(f"  round {r + 1}/{rounds}: records {name}, closed loop ...")
                many = [[q] * 20_000 for q in reqs[name]]
                stats = run_load(HOST, gw.port, many, slice_s / 2, warmup=0.5, cpu=None)
                out["closed"][name].append(
                    {"rps": round(stats.rps, 1), "p99_ms": round(stats.percentile(99) * 1e3, 3)}
                )
        out["stored"] = {}
        for name in writers:
            gw = gws[name]
            dropped = _metric(gw, "ivrgw_records_dropped_total")
            answered = sum(p["turns"] for p in out["paced"][name])
            gw.stop()  # SIGTERM: the lifespan flushes the writer's queue
            db = sqlite3.connect(tmp / name / "var" / "gateway.db")
            try:
                rows = db.execute(
                    "SELECT COUNT(*) FROM conversation_details WHERE Speaker = 'Customer'"
                ).fetchone()[0]
            finally:
                db.close()
            out["stored"][name] = {
                "dropped": dropped,
                "customer_lines": rows,
                "paced_turns": answered,
            }
    out["ratios"] = {}
    for name in writers:
        p99 = [
            a["p99_ms"] / b["p99_ms"]
            for a, b in zip(out["paced"][name], out["paced"]["off"], strict=True)
            if b["p99_ms"]
        ]
        rps = [
            a["rps"] / b["rps"]
            for a, b in zip(out["closed"][name], out["closed"]["off"], strict=True)
            if b["rps"]
        ]
        out["ratios"][name] = {
            "p99_per_round": [round(x, 3) for x in p99],
            "p99": round(_median(p99), 3) if p99 else None,
            "rps": round(_median(rps), 3) if rps else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=64)
    ap.add_argument("--rate", type=float, default=3000.0, help="turns/s over all calls")
    ap.add_argument("--slice", type=float, default=6.0, help="seconds per measured slice")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument(
        "--writers",
        default="idle",
        help="how the writer thread is scheduled, compared with records off:"
        " idle (SCHED_IDLE, the default), nice (nice 19), or idle,nice",
    )
    args = ap.parse_args()
    writers = tuple(w for w in args.writers.split(",") if w)
    if not writers or any(w not in WRITERS for w in writers):
        ap.error("--writers takes idle and/or nice")
    res = run(args.calls, args.rate, args.slice, args.rounds, writers)
    for name in (*writers, "off"):
        for k, p in enumerate(res["paced"][name]):
            c = res["closed"][name][k]
            print(
                f"records {name:<7} round {k + 1}: paced p50 {p['p50_ms']:.2f} ms"
                f"  p99 {p['p99_ms']:.2f} ms  p99.9 {p['p999_ms']:.2f} ms  errors {p['errors']}"
                f"  gw cpu {p['server_cpu']:.0%}   closed {c['rps']:.0f} turns/s"
                f"  drained in {p['drain_s']:.1f} s"
            )
    for name in writers:
        ratio = res["ratios"][name]
        stored = res["stored"][name]
        print(f"writer {name}: p99 on/off per round: {ratio['p99_per_round']}")
        print(f"writer {name}: p99 ratio (median): {ratio['p99']}x   (target <= 1.05x)")
        print(f"writer {name}: closed-loop throughput on/off (median): {ratio['rps']}x")
        print(
            f"writer {name}: records dropped: {stored['dropped']:.0f}; customer lines stored"
            f" {stored['customer_lines']} (begun + paced + closed turns)"
        )
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (results / f"records-{stamp}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

"""Measurement: Dialogue turns over one websocket (front=websocket) against the RPC API.

The same gateway serves both, in interleaved rounds: C calls multiplexed on
ONE websocket, each sending its next `utterance` as soon as the action
answering the previous one arrives (closed loop, C turns in flight), and
the RPC front at C keep-alive connections, closed loop, with the same turn
(`Utterance=查询余额` on the demo instance, `balance` 100 in the context).
With auth on (the default configuration), RPC requests are RPC v1 signed
and the websocket is authenticated once at its upgrade (a bearer token);
`--auth off` runs a second gateway with `[auth] enabled = false` for the
unsigned comparison. The gateway is pinned to CPU 0, the generator to
CPU 1; both report their CPU share.

The websocket generator is an asyncio Protocol on uvloop over a raw TCP
connection: frames are pre-built (masked with a zero key, which RFC 6455
allows the server to accept: the key exists for proxies' sake), an answer
is matched to its call by the call id at a fixed offset, and every next
frame from one read goes out in one write.
Run: `python -m bench.ws_turn [--calls C] [--duration S] [--rounds N] [--auth on|off|both]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any, cast

import orjson
import uvloop

from bench import gwconfig
from bench.loadgen import RunStats, run_load
from bench.procs import LOADGEN_CPU, Server, Servers, can_pin, cpu_seconds, free_port
from bench.rpc_turn import (
    EXPECTED_TEXT,
    HOST,
    UTTERANCE,
    Signer,
    _median,
    _summary,
    begin_all,
    build_signed,
    turn_params,
)

TOKEN = gwconfig.BEARER
WARMUP = 1.0
DRAIN_TIMEOUT = 5.0
_ACTION = b'{"type":"action","call_id":"'
_ENDED = b'{"type":"ended"'
_EXPECTED = EXPECTED_TEXT.encode()


def frame(message: dict[str, Any]) -> bytes:
    """A client text frame: FIN + text opcode, masked with the zero key."""
    payload = orjson.dumps(message)
    n = len(payload)
    # Payload lengths under 126 fit the second byte; longer ones take two more.
    length = bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    return b"\x81" + length + b"\0\0\0\0" + payload


def handshake(port: int) -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ivrgw.v1\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()


def split_frames(buf: bytearray, pos: int = 0) -> list[bytes]:
    """The payloads of the whole server frames in `buf` from `pos`; removes what it read."""
    out: list[bytes] = []
    size = len(buf)
    while size - pos >= 2:
        n = buf[pos + 1]
        start = pos + 2
        if n == 126:
            if size - pos < 4:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif n == 127:
            if size - pos < 10:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start = pos + 10
        if size < start + n:
            break
        out.append(bytes(buf[start : start + n]))
        pos = start + n
    del buf[:pos]
    return out


class _Socket(asyncio.Protocol):
    """One websocket carrying every call of a slice."""

    def __init__(self, stats: RunStats, calls: list[str], opened: asyncio.Future[None]) -> None:
        self.stats = stats
        self.index = {c.encode(): i for i, c in enumerate(calls)}
        self.starts = [
            frame(
                {
                    "type": "start",
                    "id": 0,
                    "call_id": c,
                    "calling": "1",
                    "context": {"balance": "100"},
                }
            )
            for c in calls
        ]
        self.turns = [
            frame({"type": "utterance", "id": 1, "call_id": c, "text": UTTERANCE}) for c in calls
        ]
        self.ends = [frame({"type": "end", "id": 2, "call_id": c}) for c in calls]
        self.sent = array("d", [0.0] * len(calls))
        self.opened = opened
        self.upgraded = False
        self.measuring = False
        self.stopping = False
        self.ended = 0
        self.done: asyncio.Future[None] = opened.get_loop().create_future()
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def begin(self) -> None:
        assert self.transport is not None
        now = time.perf_counter()
        for i in range(len(self.sent)):
            self.sent[i] = now
        self.transport.write(b"".join(self.starts))

    def error(self, kind: str) -> None:
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                self.opened.set_exception(RuntimeError(bytes(buf[:end]).decode("latin-1")))
                return
            self.upgraded = True
            pos = end + 4
            self.opened.set_result(None)
        out: list[bytes] = []
        for payload in split_frames(buf, pos):
            self.answer(payload, out)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def answer(self, payload: bytes, out: list[bytes]) -> None:
        if not payload.startswith(_ACTION):
            if payload.startswith(_ENDED):
                self.ended += 1
                if self.ended == len(self.sent) and not self.done.done():
                    self.done.set_result(None)
            else:
                self.error(payload[:80].decode("utf-8", "replace"))
            return
        q = payload.index(b'"', 28)
        i = self.index[payload[28:q]]
        now = time.perf_counter()
        # A turn's answer (id 1) is counted; the greeting (id 0) only begins the call.
        if self.measuring and payload[q : q + 8] == b'","id":1':
            stats = self.stats
            stats.requests += 1
            stats.latencies.append(now - self.sent[i])
            if _EXPECTED not in payload:
                self.error("unexpected-answer")
        if self.stopping:
            out.append(self.ends[i])
            return
        self.sent[i] = now
        out.append(self.turns[i])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.error("connection-lost")
            self.done.set_result(None)


async def _ws_slice(port: int, calls: list[str], duration: float, server_cpu: Any) -> RunStats:
    loop = asyncio.get_running_loop()
    stats = RunStats(connections=1)
    opened: asyncio.Future[None] = loop.create_future()
    sock = _Socket(stats, calls, opened)
    transport, _ = await loop.create_connection(lambda: sock, HOST, port)
    try:
        transport.write(handshake(port))
        await asyncio.wait_for(opened, 5)
        sock.begin()
        await asyncio.sleep(WARMUP)
        r0, s0, t0 = resource.getrusage(resource.RUSAGE_SELF), server_cpu(), time.perf_counter()
        sock.measuring = True
        await asyncio.sleep(duration)
        sock.measuring = False
        r1, s1, t1 = resource.getrusage(resource.RUSAGE_SELF), server_cpu(), time.perf_counter()
        # Each call ends after its turn in flight; the slice is over when all have.
        sock.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sock.done, DRAIN_TIMEOUT)
        if sock.ended < len(calls):
            stats.exhausted = len(calls) - sock.ended
    finally:
        transport.close()
    wall = t1 - t0
    stats.duration = wall
    stats.gen_cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall
    stats.server_cpu = (s1 - s0) / wall
    return stats


def run_ws(port: int, calls: list[str], duration: float, pid: int, cpu: int | None) -> RunStats:
    previous = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_ws_slice(port, calls, duration, lambda: cpu_seconds(pid)))
    finally:
        os.sched_setaffinity(0, previous)


def _gateway(servers: Servers, tmp: Path, auth: bool) -> Server:
    port = free_port()
    name = f"gateway-auth-{'on' if auth else 'off'}"
    config = gwconfig.write(tmp / name, port=port, auth=auth)
    gwconfig.update(config, {"adapters": {"websocket": gwconfig.websocket_adapter()}})
    return servers.gateway(name, config, port)


def run(
    calls: int, duration: float, rounds: int, auths: tuple[bool, ...], log: Any = print
) -> dict[str, Any]:
    pin = can_pin()
    cpu = LOADGEN_CPU if pin else None
    slice_s = duration / rounds
    per_connection = int(40_000 * (slice_s + WARMUP + 1.0) / calls) + 1
    results: dict[str, Any] = {"calls": calls, "rounds": rounds, "slice_s": slice_s, "pinned": pin}
    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-ws-") as tmpdir,
        Servers(Path(tmpdir), pin) as servers,
    ):
        for auth in auths:
            gw = _gateway(servers, Path(tmpdir), auth)
            key = gwconfig.DEMO_KEY
            signer = Signer(gw.port, key["id"], key["secret"]) if auth else Signer(gw.port)
            begin_all(gw, signer, calls)
            if auth:
                log(f"  building {rounds * calls * per_connection} signed requests ...")
                batches = [build_signed(signer, calls, per_connection) for _ in range(rounds)]
            else:
                plain = [
                    [signer.request(turn_params(f"bench-{i}"))] * per_connection
                    for i in range(calls)
                ]
                batches = [plain] * rounds
            slices: dict[str, list[dict[str, Any]]] = {"websocket": [], "rpc": []}
            for r in range(rounds):
                for front in ("websocket", "rpc") if r % 2 == 0 else ("rpc", "websocket"):
                    log(f"  auth {'on' if auth else 'off'}, round {r + 1}/{rounds}: {front} ...")
                    if front == "websocket":
                        ids = [f"ws-r{r}-c{i}" for i in range(calls)]
                        stats = run_ws(gw.port, ids, slice_s, gw.pid, cpu)
                    else:
                        stats = run_load(
                            HOST,
                            gw.port,
                            batches[r],
                            slice_s,
                            warmup=WARMUP,
                            cpu=cpu,
                            server_cpu=lambda pid=gw.pid: cpu_seconds(pid),
                        )
                    if gw.proc.poll() is not None:
                        raise RuntimeError(f"the gateway died:\n{gw.log_tail()}")
                    slices[front].append({**_summary(stats), "round": r + 1})
                batches[r] = []
            ratios = [
                round(w["rps"] / p["rps"], 3)
                for w, p in zip(slices["websocket"], slices["rpc"], strict=True)
                if p["rps"]
            ]
            results["auth_on" if auth else "auth_off"] = {
                "slices": slices,
                "ratios_per_round": ratios,
                "ratio": _median(ratios) if ratios else None,
                "valid": all(
                    not x["errors"] and not x["exhausted_connections"]
                    for runs in slices.values()
                    for x in runs
                ),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_turn")
    parser.add_argument(
        "--calls", type=int, default=64, help="calls on the socket, RPC connections"
    )
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per front and auth")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--auth", choices=("on", "off", "both"), default="both")
    args = parser.parse_args()
    auths = {"on": (True,), "off": (False,), "both": (True, False)}[args.auth]
    result = run(args.calls, args.duration, args.rounds, auths)
    print(
        f"{'auth':<6}{'round':<7}{'front':<11}{'turns/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'srv cpu':>9}{'gen cpu':>9}"
    )
    for auth in ("auth_on", "auth_off"):
        if auth not in result:
            continue
        for front, rows in result[auth]["slices"].items():
            for x in rows:
                errors = sum(x["errors"].values())
                print(
                    f"{auth[5:]:<6}{x['round']:<7}{front:<11}{x['rps']:>9.0f}{x['p50_ms']:>9.2f}"
                    f"{x['p99_ms']:>9.2f}{errors:>8}{x['server_cpu'] or 0:>9.2f}"
                    f"{x['generator_cpu']:>9.2f}"
                )
    for auth in ("auth_on", "auth_off"):
        if auth in result:
            r = result[auth]
            print(
                f"websocket / rpc turns/s, auth {auth[5:]}: median {r['ratio']:.2f}x, "
                f"rounds {r['ratios_per_round']}, valid={r['valid']}"
            )


if __name__ == "__main__":
    main()

"""Client throughput: our `Pool` against aiohttp's ClientSession, same server, same run.

`python -m bench.pool_compare [--rounds 5] [--duration 5] [--concurrency 64]`

Rules of this file:
- One raw server (uvloop + httptools, a fixed small JSON body, keep-alive)
  runs as a subprocess pinned to CPU 0; both clients run in this process,
  pinned to CPU 1, one after the other in rotating order within each round.
  The server does far less per request than either client, so the client's
  core is the bottleneck: `cli cpu` near 100 % and `srv cpu` below it.
- Each slice: `concurrency` tasks send GET requests back to back, after a
  warm-up, until `duration` seconds or `max_requests` responses. Bounded in
  time and count, on 127.0.0.1 only; the server PID we started is the only
  one stopped.
- Printed: req/s per client per round, the ratio ours/aiohttp of each round,
  and the median ratio (drift on a shared VM cancels within a round); the
  same for requests per client CPU-second, which a busy neighbour on CPU 1
  disturbs less than req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import aiohttp
import httptools
import uvloop

from bench.procs import LOADGEN_CPU, Servers, can_pin, cpu_seconds, free_port
from gateway.net.pool import Pool

BODY = b'{"RequestId":"00000000-0000-0000-0000-000000000000","Code":"OK","Message":"hello"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
WARMUP = 0.5
REQUEST_TIMEOUT = 10.0


# -- the server (runs in the subprocess) ------------------------------------------


class _ServerConnection(asyncio.Protocol):
    """Answers every complete request on the connection with RESPONSE."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_ServerConnection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# -- the clients ------------------------------------------------------------------


async def _slice(
    send: Callable[[], Awaitable[None]], concurrency: int, duration: float, max_requests: int
) -> tuple[float, float]:
    """(req/s, client CPU share) of `concurrency` tasks sending back to back."""
    counting = False
    stop = False
    done = 0

    async def worker() -> None:
        nonlocal done
        while not stop:
            await send()
            if counting:
                done += 1
                if done >= max_requests:
                    return

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(WARMUP)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        counting = True
        deadline = t0 + duration
        while time.perf_counter() < deadline and done < max_requests:
            await asyncio.sleep(0.05)
        counted, t1 = done, time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), REQUEST_TIMEOUT)
    finally:
        for task in tasks:
            task.cancel()
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return counted / (t1 - t0), cpu / (t1 - t0)


async def _compare(
    url: str, server_pid: int, rounds: int, duration: float, concurrency: int, max_requests: int
) -> dict[str, list[tuple[float, float, float]]]:
    pool = Pool(max_connections=concurrency)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async def ours() -> None:
        response = await pool.request("GET", url, timeout=REQUEST_TIMEOUT)
        if response.status != 200 or response.body != BODY:
            raise RuntimeError(f"unexpected response {response.status}")

    async def theirs() -> None:
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200 or body != BODY:
                raise RuntimeError(f"unexpected response {response.status}")

    clients = {"pool": ours, "aiohttp": theirs}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in clients}
    try:
        for k in range(rounds):
            # Rotate the order so neither client always runs first in a round.
            names = list(clients) if k % 2 == 0 else list(reversed(clients))
            for name in names:
                s0, t0 = cpu_seconds(server_pid), time.perf_counter()
                rps, cli_cpu = await _slice(clients[name], concurrency, duration, max_requests)
                srv_cpu = (cpu_seconds(server_pid) - s0) / (time.perf_counter() - t0)
                results[name].append((rps, cli_cpu, srv_cpu))
                per_cpu = rps / cli_cpu if cli_cpu else 0.0
                print(
                    f"round {k + 1} {name:<8} {rps:>9.0f} req/s   cli cpu {cli_cpu:>4.0%}"
                    f"   srv cpu {srv_cpu:>4.0%}   {per_cpu:>9.0f} req per client CPU-s",
                    flush=True,
                )
    finally:
        await pool.aclose()
        await session.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per client slice")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="cap per slice")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve(args.serve))
        return

    pin = can_pin()
    port = free_port()
    with tempfile.TemporaryDirectory() as logdir, Servers(Path(logdir), pin) as servers:
        server = servers.start(
            "raw-server", ["-m", "bench.pool_compare", "--serve", str(port)], port
        )
        server.wait_ready("/")
        if pin:
            os.sched_setaffinity(0, {LOADGEN_CPU})
        print(
            f"GET {len(BODY)} B JSON from a uvloop+httptools server, c{args.concurrency}, "
            f"{args.rounds} rounds of {args.duration:g} s per client, "
            f"{'server CPU 0, clients CPU 1' if pin else 'not pinned'}",
            flush=True,
        )
        url = f"http://127.0.0.1:{port}/"
        results = uvloop.run(
            _compare(
                url, server.pid, args.rounds, args.duration, args.concurrency, args.max_requests
            )
        )
    ratios = [
        ours[0] / theirs[0]
        for ours, theirs in zip(results["pool"], results["aiohttp"], strict=True)
        if theirs[0]
    ]
    # Per client CPU-second: the client's own cost, steadier than req/s when
    # the VM lends CPU 1 to someone else for part of a slice.
    cpu_ratios = [
        (ours[0] / ours[1]) / (theirs[0] / theirs[1])
        for ours, theirs in zip(results["pool"], results["aiohttp"], strict=True)
        if theirs[0] and ours[1] and theirs[1]
    ]
    print("ratio pool/aiohttp per round, req/s:        " + "  ".join(f"{r:.2f}x" for r in ratios))
    print(
        "ratio pool/aiohttp per round, per CPU-s:    " + "  ".join(f"{r:.2f}x" for r in cpu_ratios)
    )
    print(
        f"median: pool {statistics.median(r[0] for r in results['pool']):.0f} req/s, "
        f"aiohttp {statistics.median(r[0] for r in results['aiohttp']):.0f} req/s, "
        f"ratio {statistics.median(ratios):.2f}x (req/s), "
        f"{statistics.median(cpu_ratios):.2f}x (per client CPU-s)"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()

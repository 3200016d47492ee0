"""A closed-loop HTTP/1.1 load generator over raw keep-alive connections.

Each connection sends one pre-built request, reads one full response
(Content-Length framed), records the latency and sends the next: no request
is built, signed or parsed beyond the status line and Content-Length while
the clock runs. Runs on uvloop; asyncio Protocols, no streams, so the
per-request cost stays in the event loop's C code as far as possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import uvloop

WARMUP = 2.0
RUSAGE_SELF = resource.RUSAGE_SELF
DRAIN_TIMEOUT = 5.0


def parse_response(buf: bytes | bytearray) -> tuple[int, int, int] | None:
    """(status, body start, body end) of the first full response in `buf`, or None if partial."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without Content-Length")
    eol = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : eol if eol >= 0 else len(head)])
    start = end + 4
    if len(buf) < start + length:
        return None
    return int(buf[9:12]), start, start + length


def fetch(host: str, port: int, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send one request on a new connection; (status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        buf = bytearray()
        while (parsed := parse_response(buf)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a full response")
            buf += chunk
        status, start, end = parsed
        return status, bytes(buf[start:end])


@dataclass
class RunStats:
    """What one load run measured; times in seconds."""

    connections: int
    duration: float = 0.0
    requests: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: dict[str, int] = field(default_factory=dict)
    exhausted: int = 0  # connections that ran out of pre-built requests
    gen_cpu: float = 0.0  # generator CPU seconds / wall seconds over the timed window
    server_cpu: float | None = None  # the same for the server process

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def error_count(self) -> int:
        return sum(self.errors.values())


class _Run:
    """State shared by the connections of one run."""

    def __init__(self, stats: RunStats, body_length: int | None) -> None:
        self.stats = stats
        self.body_length = body_length
        self.measuring = False
        self.stopping = False

    def error(self, kind: str) -> None:
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run, requests: Sequence[bytes], done: asyncio.Future[None]) -> None:
        self.run = run
        self.requests = requests
        self.next = 0
        self.done = done
        self.buf = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self) -> None:
        if self.run.stopping:
            self._finish()
            return
        if self.next >= len(self.requests):
            self.run.stats.exhausted += 1
            self._finish()
            return
        request = self.requests[self.next]
        self.next += 1
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        try:
            parsed = parse_response(buf)
        except ValueError:
            self.run.error("framing")
            self._finish()
            return
        if parsed is None:
            return
        now = time.perf_counter()
        status, start, end = parsed
        del buf[:end]
        run = self.run
        if run.measuring:
            stats = run.stats
            stats.requests += 1
            stats.latencies.append(now - self.sent_at)
            if status != 200:
                run.error(str(status))
            elif run.body_length is not None and end - start != run.body_length:
                run.error("body-length")
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.run.error("connection-lost")
            self.done.set_result(None)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _run(
    host: str,
    port: int,
    requests: Sequence[Sequence[bytes]],
    duration: float,
    warmup: float,
    body_length: int | None,
    server_cpu: Callable[[], float] | None,
) -> RunStats:
    loop = asyncio.get_running_loop()
    stats = RunStats(connections=len(requests))
    run = _Run(stats, body_length)
    conns: list[_Connection] = []
    for reqs in requests:
        done: asyncio.Future[None] = loop.create_future()
        conn = _Connection(run, reqs, done)
        await loop.create_connection(lambda c=conn: c, host, port)  # type: ignore[misc]
        conns.append(conn)
    try:
        for conn in conns:
            conn.send()
        await asyncio.sleep(warmup)
        r0, s0, t0 = resource.getrusage(RUSAGE_SELF), _call(server_cpu), time.perf_counter()
        run.measuring = True
        await asyncio.sleep(duration)
        run.measuring = False
        r1, s1, t1 = resource.getrusage(RUSAGE_SELF), _call(server_cpu), time.perf_counter()
        run.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), DRAIN_TIMEOUT)
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
    wall = t1 - t0
    stats.duration = wall
    stats.gen_cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall
    if s0 is not None and s1 is not None:
        stats.server_cpu = (s1 - s0) / wall
    return stats


def _call(f: Callable[[], float] | None) -> float | None:
    return None if f is None else f()


def run_load(
    host: str,
    port: int,
    requests: Sequence[Sequence[bytes]],
    duration: float,
    *,
    warmup: float = WARMUP,
    body_length: int | None = None,
    cpu: int | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> RunStats:
    """One closed-loop run: a connection per element of `requests`, each sending its own list.

    Responses after `warmup` and before `warmup + duration` are counted. When
    `body_length` is given, a 200 with a body of another length is an error.
    With `cpu`, this thread is pinned to that CPU for the run.
    """
    previous = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_run(host, port, requests, duration, warmup, body_length, server_cpu))
    finally:
        os.sched_setaffinity(0, previous)

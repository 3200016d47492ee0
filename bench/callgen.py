"""Scripted calls against a front door, closed loop or open loop.

Rules of this file:
- A call is one coroutine playing one script (bench.scripts) through a
  transport: an HTTP keep-alive connection of a pool (RPC, httapi,
  webhook, the baselines), a multiplexed websocket (bench.ws_calls) or the
  fake Asterisk (bench.ari_calls). A transport resolves each turn with the
  time its answer arrived, taken where the bytes are read.
- Closed loop: `calls` callers, each starting its next call when the last
  ends; think time between turns. Latency runs from the send.
- Open loop: calls arrive at a fixed rate, and turn i of a call is due at
  its arrival + i x think time, whatever happened before. Latency runs from
  that intended time (or from the send, when the send was early), so a
  stall delays the due turns and is counted in full: no coordinated
  omission. The send lag (send minus due) is kept to show the generator
  kept up.
- Bounded: every run stops starting calls at the end of its window, lets
  calls in flight finish their scripts (no think time) for at most `drain`
  seconds, then cancels what is left; `max_calls` caps the calls started.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

from bench.fronts import FALLBACK_MARK, PLACEHOLDER, Templates, call_id
from bench.loadgen import parse_response

EARLY = 0.001  # open loop: wake this much before a due time (timers are ms-coarse)
CONNECT_TIMEOUT = 5.0
now = time.perf_counter


class Leg(Protocol):
    """One call's path through a transport.

    `due`, when a turn sets it, is when that turn started on the server's own
    clock (a gateway timer), and its latency runs from there.
    """

    due: float | None

    async def turn(self, i: int) -> tuple[float, str | None]:
        """Send step i; (when its answer arrived, error kind or None)."""
        ...

    def release(self) -> None: ...


class Transport(Protocol):
    async def start(self) -> None: ...

    async def open(self, call: str, script: int) -> Leg: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Load:
    """What to run: closed loop at `calls`, or open loop at `rate` turns per second."""

    mode: Literal["closed", "open"]
    duration: float
    warmup: float = 1.0
    calls: int = 1
    rate: float = 0.0
    think: float = 0.0
    max_calls: int = 10_000_000
    drain: float = 10.0


@dataclass
class Slice:
    """What one run measured. Times in seconds; CPU as seconds over the window."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    lags: array[float] = field(default_factory=lambda: array("d"))
    errors: dict[str, int] = field(default_factory=dict)
    window: float = 0.0
    calls_started: int = 0
    calls_unfinished: int = 0
    gen_cpu_s: float = 0.0
    server_cpu_s: float | None = None

    @property
    def turns(self) -> int:
        return len(self.latencies)


class _Recorder:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, t1
        self.out = Slice()
        self.stopping = False

    def record(self, start: float, done: float, error: str | None, lag: float | None) -> None:
        if self.t0 <= done < self.t1:
            self.out.latencies.append(done - start)
            if lag is not None:
                self.out.lags.append(lag)
            if error is not None:
                self.out.errors[error] = self.out.errors.get(error, 0) + 1


async def _sleep_until(t: float) -> None:
    delay = t - now()
    if delay > 0:
        await asyncio.sleep(delay)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(
    transport: Transport,
    load: Load,
    turns_per_script: Sequence[int],
    tag: str,
    server_cpu: Callable[[], float] | None = None,
) -> Slice:
    """One run of `load` through `transport`; call ids are `call_id(tag, n)`."""
    await transport.start()
    started = now()
    rec = _Recorder(started + load.warmup, started + load.warmup + load.duration)
    numbers = itertools.count()
    closed = load.mode == "closed"
    calls: set[asyncio.Task[None]] = set()

    async def one_call(n: int, due: float | None) -> None:
        script = n % len(turns_per_script)
        try:
            leg = await transport.open(call_id(tag, n), script)
        except (OSError, TimeoutError) as exc:
            rec.record(due or now(), now(), f"open: {type(exc).__name__}", None)
            return
        try:
            for i in range(turns_per_script[script]):
                lag: float | None = None
                if due is not None:
                    target = due + i * load.think
                    if not rec.stopping:
                        await _sleep_until(target - EARLY)
                    sent = now()
                    lag = sent - target
                    start = min(target, sent)
                else:
                    if i and load.think and not rec.stopping:
                        await asyncio.sleep(load.think)
                    start = sent = now()
                done, error = await leg.turn(i)
                if leg.due is not None:
                    start = leg.due
                rec.record(start, done, error, lag)
                if error == "connection-lost":
                    break
        finally:
            leg.release()

    async def caller() -> None:
        while not rec.stopping:
            n = next(numbers)
            if n >= load.max_calls:
                return
            rec.out.calls_started += 1
            await one_call(n, None)

    async def arrivals() -> None:
        # `rate` is in turns per second: calls arrive at rate / mean turns per call.
        interval = sum(turns_per_script) / len(turns_per_script) / load.rate
        for n in range(load.max_calls):
            due = started + n * interval
            if due >= rec.t1:
                break
            await _sleep_until(due - EARLY)
            rec.out.calls_started += 1
            task = asyncio.create_task(one_call(n, due))
            calls.add(task)
            task.add_done_callback(calls.discard)
        await _sleep_until(rec.t1)

    async def window() -> tuple[float, float, float | None, float | None]:
        await _sleep_until(rec.t0)
        c0, s0, w0 = _cpu(), server_cpu() if server_cpu else None, now()
        await _sleep_until(rec.t1)
        c1, s1, w1 = _cpu(), server_cpu() if server_cpu else None, now()
        rec.stopping = True
        rec.t1 = w1
        cpu = None if s0 is None or s1 is None else s1 - s0
        return w1 - w0, c1 - c0, s0, cpu

    timer = asyncio.create_task(window())
    drivers = (
        [asyncio.create_task(caller()) for _ in range(load.calls)]
        if closed
        else [asyncio.create_task(arrivals())]
    )
    try:
        limit = load.warmup + load.duration + load.drain
        await asyncio.wait(drivers, timeout=limit)
        rec.stopping = True
        if calls:
            await asyncio.wait(set(calls), timeout=load.drain)
        if not timer.done():
            await asyncio.wait([timer], timeout=0.1)
    finally:
        left = [t for t in (*drivers, *calls) if not t.done()]
        rec.out.calls_unfinished = len(left)
        for t in (*left, timer):
            t.cancel()
        await asyncio.gather(*left, timer, return_exceptions=True)
        await transport.close()
    if timer.done() and not timer.cancelled() and timer.exception() is None:
        wall, gen, _, srv = timer.result()
        rec.out.window, rec.out.gen_cpu_s, rec.out.server_cpu_s = wall, gen, srv
    return rec.out


# -- HTTP keep-alive connections ----------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one request in flight, answered with (arrival, error)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[float, str | None]] | None = None
        self.transport: asyncio.Transport | None = None
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def request(self, data: bytes) -> asyncio.Future[tuple[float, str | None]]:
        waiter = asyncio.get_running_loop().create_future()
        if not self.alive or self.transport is None:
            waiter.set_result((now(), "connection-lost"))
            return waiter
        self.waiter = waiter
        self.transport.write(data)
        return waiter

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        try:
            parsed = parse_response(buf)
        except ValueError:
            self._answer("framing")
            self.buf.clear()
            return
        if parsed is not None:
            status, start, end = parsed
            error = None
            if status != 200:
                error = str(status)
            elif buf.find(FALLBACK_MARK, start, end) >= 0:
                error = "fallback"
            del buf[:end]
            self._answer(error)

    def _answer(self, error: str | None) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((now(), error))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._answer("connection-lost")


class Pool:
    """Keep-alive connections to one server, at most `limit`; a caller waits for one."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[_Conn] = []
        self.all: list[_Conn] = []
        self.waiting: list[asyncio.Future[_Conn]] = []

    async def acquire(self) -> _Conn:
        while self.idle:
            conn = self.idle.pop()
            if conn.alive:
                return conn
        self.all = [c for c in self.all if c.alive]
        if len(self.all) < self.limit:
            conn = _Conn()
            self.all.append(conn)
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: conn, self.host, self.port), CONNECT_TIMEOUT
                )
            except BaseException:
                self.all.remove(conn)
                raise
            return conn
        waiter: asyncio.Future[_Conn] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        return await waiter

    def release(self, conn: _Conn) -> None:
        while self.waiting:
            waiter = self.waiting.pop(0)
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()
        self.all, self.idle = [], []


class _HttpLeg:
    __slots__ = ("call", "conn", "pool", "templates")
    due = None

    def __init__(self, pool: Pool, conn: _Conn, templates: tuple[bytes, ...], call: str) -> None:
        self.pool, self.conn, self.templates, self.call = pool, conn, templates, call.encode()

    async def turn(self, i: int) -> tuple[float, str | None]:
        return await self.conn.request(self.templates[i].replace(PLACEHOLDER, self.call))

    def release(self) -> None:
        if self.conn.alive and self.conn.waiter is None:
            self.pool.release(self.conn)


class HttpTransport:
    """A call per keep-alive connection, taken from a pool of at most `connections`."""

    def __init__(self, host: str, port: int, templates: Templates, connections: int) -> None:
        self.templates = templates
        self.pool = Pool(host, port, connections)

    async def start(self) -> None:
        return None

    async def open(self, call: str, script: int) -> Leg:
        conn = await self.pool.acquire()
        return _HttpLeg(self.pool, conn, self.templates.by_script[script], call)

    async def close(self) -> None:
        self.pool.close()

"""A durable outbox in SQLite: messages that must reach a backend at least once.

EndDialogue to a remote navigator goes here: the call has hung up, nobody
waits for the answer, but the remote must hear of it even if it is down now
or the gateway restarts first.

Rules of this file:
- `put` returns once the message is committed (WAL, synchronous=NORMAL:
  it survives a crash of the gateway process).
- One thread owns the connection; the event loop never blocks on SQLite.
- A delivery that raises `BackendError` is retried with capped exponential
  backoff and jitter; one that returns is done and the row is deleted.
  Messages older than `max_age` are dropped with a warning.
- On start, rows left by an earlier run are delivered like new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import errors

log = logging.getLogger("gateway.outbox")

T = TypeVar("T")
Deliver = Callable[[Mapping[str, Any]], Awaitable[None]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at);
"""


class Row(NamedTuple):
    id: int
    target: str
    payload: bytes
    created: float
    attempts: int


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        retry_base: float = 0.5,
        retry_max: float = 60.0,
        max_age: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_age = max_age
        self.clock = clock
        self._targets: dict[str, Deliver] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.pending = 0
        self.delivered = 0
        self.retries = 0
        self.dropped = 0

    # -- the database thread --------------------------------------------------

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._db = db
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def _insert(self, target: str, payload: bytes, now: float) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO outbox (target, payload, created, next_at) VALUES (?, ?, ?, ?)",
            (target, payload, now, now),
        )

    def _due(self, now: float, limit: int) -> tuple[list[Row], float | None]:
        assert self._db is not None
        rows = [
            Row(*r)
            for r in self._db.execute(
                "SELECT id, target, payload, created, attempts FROM outbox"
                " WHERE next_at <= ? ORDER BY next_at LIMIT ?",
                (now, limit),
            )
        ]
        nxt = self._db.execute("SELECT min(next_at) FROM outbox WHERE next_at > ?", (now,))
        return rows, nxt.fetchone()[0]

    def _delete(self, row_id: int) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def _reschedule(self, row_id: int, attempts: int, next_at: float) -> None:
        assert self._db is not None
        self._db.execute(
            "UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?", (attempts, next_at, row_id)
        )

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- the event loop -------------------------------------------------------

    def register(self, target: str, deliver: Deliver) -> None:
        self._targets[target] = deliver

    async def start(self) -> None:
        self.pending = await self._call(self._open)
        if self.pending:
            log.info("outbox has undelivered messages", extra={"fields": {"count": self.pending}})
        self._task = asyncio.create_task(self._run())

    async def put(self, target: str, payload: Mapping[str, Any]) -> None:
        await self._call(self._insert, target, orjson.dumps(payload), self.clock())
        self.pending += 1
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            rows, next_at = await self._call(self._due, self.clock(), 32)
            for row in rows:
                await self._deliver(row)
            if len(rows) == 32:
                continue
            wait = 5.0 if next_at is None else max(0.0, min(5.0, next_at - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _deliver(self, row: Row) -> None:
        deliver = self._targets.get(row.target)
        now = self.clock()
        fields = {"target": row.target, "id": row.id, "attempts": row.attempts}
        if deliver is None or now - row.created > self.max_age:
            why = "no such target" if deliver is None else "too old"
            log.warning("outbox message dropped", extra={"fields": {**fields, "why": why}})
            await self._call(self._delete, row.id)
            self.pending -= 1
            self.dropped += 1
            return
        try:
            await deliver(orjson.loads(row.payload))
        except errors.BackendError as exc:
            attempts = row.attempts + 1
            delay = min(self.retry_max, self.retry_base * 2 ** min(attempts, 30))
            delay *= 0.5 + random.random() / 2  # jitter: 50-100% of the backoff
            self.retries += 1
            log.info("outbox delivery failed", extra={"fields": {**fields, "why": exc.kind}})
            await self._call(self._reschedule, row.id, attempts, now + delay)
            return
        await self._call(self._delete, row.id)
        self.pending -= 1
        self.delivered += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, pending={self.pending})"


class OutboxCollector(Collector):
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        o = self.outbox
        yield GaugeMetricFamily(
            "ivrgw_outbox_pending", "Outbox messages not yet delivered.", value=o.pending
        )
        for name, value, doc in (
            ("delivered", o.delivered, "Outbox messages delivered."),
            ("retries", o.retries, "Outbox delivery attempts that failed and were rescheduled."),
            ("dropped", o.dropped, "Outbox messages given up (too old or no target)."),
        ):
            yield CounterMetricFamily(f"ivrgw_outbox_{name}", doc, value=value)

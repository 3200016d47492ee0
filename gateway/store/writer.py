"""The store's one writer thread: write operations from a bounded queue, committed in batches.

Rules of this file:
- One thread owns the write connection; nothing else writes the database.
- `submit` never blocks its caller (the event loop): it appends to a bounded
  queue, or, when the queue is full or the writer closed, returns False and
  counts the operation in `dropped` (with a rate-limited warning).
- The thread takes up to `batch_max` operations per transaction. It waits for
  more until the oldest queued operation is `batch_ms` old, unless a batch is
  already full or someone waits on a flush or a call. Under load the commit
  itself is the wait: whatever queued meanwhile goes in the next batch.
- The thread runs at a lower priority (`nice`, 19 by default): records are
  background work, and a turn never waits behind a commit for the CPU.
- Consecutive operations of a type with `apply_many` (the per-turn
  records) are applied in one call, an `executemany`.
- An operation that raises does not take its batch with it: the batch is
  rolled back and re-applied one operation per transaction; the bad one is
  logged with its repr, counted in `failed`, and skipped.
- `call` is for writes whose caller needs the outcome (the management API):
  it is never dropped (it bypasses the queue bound, which exists against
  record floods) and its future gets the operation's result or exception.
- `flush` waits until every operation submitted before it has been applied
  (committed, or failed and counted). `close` flushes, then stops the thread.
- Reads never come here: `gateway.store.readers.Readers` runs queries on
  read-only connections alongside the writer (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.store.db import DEFAULT_BUSY_TIMEOUT_MS, open_database

log = logging.getLogger("gateway.store")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

DEFAULT_QUEUE_SIZE = 50_000
DEFAULT_BATCH_MAX = 500
DEFAULT_BATCH_MS = 50.0
# The writer thread's nice value (0: the process's priority).
DEFAULT_NICE = 19
DROP_LOG_INTERVAL = 5.0
# A failing operation's repr is logged up to this many characters.
MAX_LOGGED_REPR = 500


class WriteOp(Protocol[T_co]):
    """One write, applied by the writer thread inside its batch transaction.

    `apply` must not commit, roll back or begin: the writer owns the
    transaction. It may run twice (a failed batch is retried item by item
    after a rollback), so it must not have effects outside the database.
    """

    def apply(self, db: sqlite3.Connection) -> T_co: ...


class Sql(NamedTuple):
    """One SQL statement as a write operation; `apply` returns its rowcount."""

    statement: str
    params: Sequence[object] = ()

    def apply(self, db: sqlite3.Connection) -> int:
        return db.execute(self.statement, self.params).rowcount


class _Item(NamedTuple):
    seq: int
    op: WriteOp[Any]
    # Set for `call`: gets the result or the exception.
    future: Future[Any] | None
    queued_at: float


_new_item = tuple.__new__


def _resolve(future: Future[Any], result: object = None, exc: BaseException | None = None) -> None:
    # The waiter may have been cancelled (its coroutine was); the write stands.
    with contextlib.suppress(InvalidStateError):
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class Writer:
    """The batching writer thread over the database at `path`."""

    def __init__(
        self,
        path: Path,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_max: int = DEFAULT_BATCH_MAX,
        batch_ms: float = DEFAULT_BATCH_MS,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
        nice: int = DEFAULT_NICE,
    ) -> None:
        if queue_size < 1 or batch_max < 1 or batch_ms < 0:
            raise ValueError("queue_size and batch_max must be >= 1, batch_ms >= 0")
        self.path = path
        self.queue_size = queue_size
        self.batch_max = batch_max
        self.batch_ms = batch_ms
        self.busy_timeout_ms = busy_timeout_ms
        self.nice = nice
        self._clock = clock
        # `submit` takes the plain lock (a C-level context manager); the
        # condition on the same lock wakes the thread only when needed.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Item] = deque()
        self._seq = 0  # the last sequence number handed out
        self._done = 0  # every item up to this one has been applied or failed
        self._urgent_to = 0  # someone waits for the items up to this one
        self._waiters: list[tuple[int, Future[None]]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._drop_logged_at = -DROP_LOG_INTERVAL
        # Counters, read by the metrics collector and tests.
        self.commits = 0  # transactions committed
        self.written = 0  # operations committed
        self.failed = 0  # submitted operations that raised and were skipped
        self.dropped = 0  # operations refused by submit (queue full or closed)
        self.retried_batches = 0  # batches rolled back and retried item by item

    # -- the caller's side ----------------------------------------------------

    def start(self) -> None:
        """Open (and migrate) the database, then start the thread.

        Blocks while it opens the file; call it at start-up, or through
        `asyncio.to_thread` from a running loop.
        """
        if self._thread is not None or self._closing:
            raise RuntimeError(f"{self!r} already started or closed")
        # Opened outside the lock: submit keeps queueing meanwhile.
        self._db = open_database(
            self.path, busy_timeout_ms=self.busy_timeout_ms, check_same_thread=False
        )
        thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        with self._cond:
            self._thread = thread
        thread.start()

    def submit(self, op: WriteOp[Any]) -> bool:
        """Queue `op`; False (and counted in `dropped`) when the queue is full or closed."""
        queue = self._queue
        with self._lock:
            n = len(queue)
            if n < self.queue_size and not self._closing:
                self._seq = seq = self._seq + 1
                # tuple.__new__ directly: a NamedTuple's own __new__ is Python code,
                # and this runs once per turn.
                queue.append(_new_item(_Item, (seq, op, None, self._clock())))
                n += 1
                # Wake the thread when it may be idle (first item) or
                # collecting (the batch just filled); otherwise it is busy.
                if n == 1 or n == self.batch_max:
                    self._cond.notify()
                return True
            self.dropped += 1
            dropped = self.dropped
        now = self._clock()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            self._drop_logged_at = now
            log.warning(
                "store queue full, write dropped",
                extra={
                    "fields": {
                        "op": type(op).__name__,
                        "dropped_total": dropped,
                        "queue_size": self.queue_size,
                        "closed": self._closing,
                    }
                },
            )
        return False

    def call_future(self, op: WriteOp[T]) -> Future[T]:
        """Queue `op` past the bound; the future gets its result once committed."""
        future: Future[T] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError(f"{self!r} is closed")
            self._seq += 1
            self._queue.append(_Item(self._seq, op, future, self._clock()))
            self._urgent_to = self._seq
            self._cond.notify()
        return future

    async def call(self, op: WriteOp[T]) -> T:
        return await asyncio.wrap_future(self.call_future(op))

    def flush_future(self) -> Future[None]:
        """A future done when everything submitted so far has been applied."""
        future: Future[None] = Future()
        with self._cond:
            target = self._seq
            # Done, or closed before it started (close counted the queue as dropped).
            if target <= self._done or (self._closing and self._thread is None):
                future.set_result(None)
                return future
            if self._thread is None:
                raise RuntimeError(f"{self!r} not started: nothing would flush")
            self._waiters.append((target, future))
            self._urgent_to = max(self._urgent_to, target)
            self._cond.notify()
        return future

    async def flush(self) -> None:
        await asyncio.wrap_future(self.flush_future())

    def flush_sync(self, timeout: float | None = None) -> None:
        self.flush_future().result(timeout)

    def close(self) -> None:
        """Apply everything queued, then stop the thread and close the connection.

        On a writer never started, queued operations are counted as dropped.
        """
        with self._cond:
            self._closing = True
            thread = self._thread
            if thread is None:
                self.dropped += len(self._queue)
                self._queue.clear()
            self._cond.notify()
        if thread is not None:
            thread.join()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return (
            f"Writer({str(self.path)!r}, queued={len(self._queue)}, commits={self.commits},"
            f" written={self.written}, failed={self.failed}, dropped={self.dropped})"
        )

    # -- the writer thread ----------------------------------------------------

    def _take(self) -> list[_Item] | None:
        """The next batch, waiting as the rules say; None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].queued_at + self.batch_ms / 1000
            while (
                len(self._queue) < self.batch_max
                and self._urgent_to <= self._done
                and not self._closing
            ):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            n = min(len(self._queue), self.batch_max)
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        assert self._db is not None
        if self.nice:
            # This thread only: the writer's CPU (SQLite's inserts, in C with
            # the GIL released) yields to the event loop's turns on a busy
            # core, instead of taking its scheduler share in bursts that show
            # in turn latency. When the loop is idle the writer runs freely.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (OSError, AttributeError):
                log.warning("store writer: cannot lower its priority", extra={"fields": {}})
        try:
            while (batch := self._take()) is not None:
                try:
                    self._apply(batch)
                except Exception:
                    # _apply handles operation errors; this is a bug, and the
                    # thread must outlive it.
                    log.exception("store writer: unexpected error", extra={"fields": {}})
                    for item in batch:
                        if item.future is not None:
                            _resolve(item.future, exc=RuntimeError("store writer error"))
                finally:
                    self._finished(batch[-1].seq)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA optimize")
            self._db.close()

    def _finished(self, seq: int) -> None:
        with self._cond:
            self._done = seq
            ready = [f for target, f in self._waiters if target <= seq]
            self._waiters = [(t, f) for t, f in self._waiters if t > seq]
        for future in ready:
            _resolve(future)

    def _apply(self, batch: list[_Item]) -> None:
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            results = _apply_all(db, batch)
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if len(batch) > 1:
                self.retried_batches += 1
                log.warning(
                    "store batch failed, retrying its operations one by one",
                    extra={"fields": {"size": len(batch), "error": repr(exc)}},
                )
                for item in batch:
                    self._apply([item])
                return
            item = batch[0]
            if item.future is not None:
                _resolve(item.future, exc=exc)
                return
            self.failed += 1
            log.warning(
                "store operation failed and was skipped",
                extra={
                    "fields": {
                        "op": repr(item.op)[:MAX_LOGGED_REPR],
                        "error": repr(exc),
                        "failed_total": self.failed,
                    }
                },
            )
            return
        self.commits += 1
        self.written += len(batch)
        for item, result in zip(batch, results, strict=True):
            if item.future is not None:
                _resolve(item.future, result)


def _apply_all(db: sqlite3.Connection, batch: list[_Item]) -> list[Any]:
    """Each operation's result, in order. In a batch of several, a run of
    operations of one type that has `apply_many(db, ops)` (records) goes in
    one call, with None results."""
    results: list[Any] = []
    n = len(batch)
    i = 0
    while i < n:
        op = batch[i].op
        many = getattr(type(op), "apply_many", None)
        # A single operation (and every one of a batch retried one by one)
        # takes its own `apply`, the path that repairs what `apply_many` assumes.
        if many is None or n == 1:
            results.append(op.apply(db))
            i += 1
            continue
        kind = type(op)
        j = i + 1
        while j < n and type(batch[j].op) is kind:
            j += 1
        many(db, [item.op for item in batch[i:j]])
        results.extend([None] * (j - i))
        i = j
    return results


class StoreCollector(Collector):
    """The writer's queue and counters as Prometheus series.

    `ivrgw_records_dropped_total` is the writer's `dropped`: only `submit`
    drops, and `submit` is how records reach the store.
    """

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        w = self.writer
        yield GaugeMetricFamily(
            "ivrgw_store_queue_depth", "Write operations waiting for the writer.", value=w.queued
        )
        for name, value, doc in (
            ("ivrgw_records_dropped", w.dropped, "Records dropped: the store queue was full."),
            ("ivrgw_store_commits", w.commits, "Store transactions committed."),
            ("ivrgw_store_written", w.written, "Write operations committed."),
            ("ivrgw_store_failed", w.failed, "Write operations that raised and were skipped."),
        ):
            yield CounterMetricFamily(name, doc, value=value)

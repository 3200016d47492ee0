"""The store's writer: write operations from a bounded queue, committed in batches by one thread.

Rules of this file:
- One writer owns the write connection; nothing else writes the database.
- `submit` never blocks its caller (the event loop): it appends to a bounded
  queue, or, when the queue is full or the writer closed, returns False and
  counts the operation in `dropped` (with a rate-limited warning). The bound
  counts every operation not yet committed, queued or in a batch.
- The thread takes up to `batch_max` operations per transaction. It waits for
  more until the oldest queued operation is `batch_ms` old, unless a batch is
  already full or someone waits on a flush or a call. Under load the commit
  itself is the wait: whatever queued meanwhile goes in the next batch.
- A batch is applied by `gateway.store.apply.apply_batch`: one transaction,
  an `executemany` for a run of records, and a failing operation skipped
  and counted without losing its batch.
- The thread runs under SCHED_IDLE (`idle`, the default), or else at a
  lower priority (`nice`): records are background work, and a turn never
  waits behind a commit for the CPU.
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
from typing import Any, NamedTuple, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.store.apply import Tally, WriteOp, apply_batch
from gateway.store.db import DEFAULT_BUSY_TIMEOUT_MS, open_database

__all__ = ["Sql", "StoreCollector", "WriteOp", "Writer"]

log = logging.getLogger("gateway.store")

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 50_000
DEFAULT_BATCH_MAX = 500
DEFAULT_BATCH_MS = 50.0
# The writer thread's nice value when it is not SCHED_IDLE (0: the process's priority).
DEFAULT_NICE = 19
DROP_LOG_INTERVAL = 5.0


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


def resolve(future: Future[Any], ok: bool, value: object) -> None:
    """Settle a call's future with an outcome (gateway.store.apply.Outcome)."""
    # The waiter may have been cancelled (its coroutine was); the write stands.
    with contextlib.suppress(InvalidStateError):
        if ok:
            future.set_result(value)
        else:
            assert isinstance(value, BaseException)
            future.set_exception(value)


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
        idle: bool = True,
        nice: int = DEFAULT_NICE,
    ) -> None:
        if queue_size < 1 or batch_max < 1 or batch_ms < 0:
            raise ValueError("queue_size and batch_max must be >= 1, batch_ms >= 0")
        self.path = path
        self.queue_size = queue_size
        self.batch_max = batch_max
        self.batch_ms = batch_ms
        self.busy_timeout_ms = busy_timeout_ms
        self.idle = idle
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
        self.tally = Tally()
        self.dropped = 0  # operations refused by submit (queue full or closed)
        # Operations behind at which a SCHED_IDLE writer runs at its nice value.
        self.catch_up_at = max(2 * batch_max, queue_size // 10)
        self.catch_ups = 0  # times it did
        self._tid: int | None = None
        self._idle_now = False  # under SCHED_IDLE, and able to leave it
        self._catching_up = False  # left SCHED_IDLE to catch up

    # The tally's counters, by name (the metrics collector and tests read them).
    @property
    def commits(self) -> int:
        return self.tally.commits

    @property
    def written(self) -> int:
        return self.tally.written

    @property
    def failed(self) -> int:
        return self.tally.failed

    @property
    def retried_batches(self) -> int:
        return self.tally.retried_batches

    # -- the caller's side ----------------------------------------------------

    def start(self) -> None:
        """Open the database, then start the thread.

        Blocks while it opens the file; call it at start-up, or through
        `asyncio.to_thread` from a running loop.
        """
        if self._thread is not None or self._closing:
            raise RuntimeError(f"{self!r} already started or closed")
        # Opened outside the lock: submit keeps queueing meanwhile.
        self._open()
        thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        with self._cond:
            self._thread = thread
        thread.start()

    def submit(self, op: WriteOp[Any]) -> bool:
        """Queue `op`; False (and counted in `dropped`) when the queue is full or closed."""
        queue = self._queue
        with self._lock:
            if self._seq - self._done < self.queue_size and not self._closing:
                self._seq = seq = self._seq + 1
                # tuple.__new__ directly: a NamedTuple's own __new__ is Python code,
                # and this runs once per turn.
                queue.append(_new_item(_Item, (seq, op, None, self._clock())))
                n = len(queue)
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
                self._done = self._seq
            self._cond.notify()
        if thread is not None:
            thread.join()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    @property
    def native_id(self) -> int | None:
        """The writer thread's id as the kernel knows it (`ps -L`, `top -H`), once started."""
        thread = self._thread
        return thread.native_id if thread is not None else None

    @property
    def queued(self) -> int:
        """Operations not yet applied: queued, or in the batch being applied."""
        return self._seq - self._done

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, queued={self.queued},"
            f" commits={self.commits}, written={self.written}, failed={self.failed},"
            f" dropped={self.dropped})"
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
        self._lower_priority()
        try:
            while (batch := self._take()) is not None:
                try:
                    self._handle(batch)
                    self._pace()
                except Exception:
                    # _handle settles operation errors; this is a bug, and the
                    # thread must outlive it.
                    log.exception("store writer: unexpected error", extra={"fields": {}})
                    error = RuntimeError("store writer error")
                    for item in batch:
                        if item.future is not None:
                            resolve(item.future, False, error)
                    self._finished(batch[-1].seq)
        finally:
            self._shutdown()

    def _finished(self, seq: int) -> None:
        with self._cond:
            self._done = max(self._done, seq)
            ready = [f for target, f in self._waiters if target <= seq]
            self._waiters = [(t, f) for t, f in self._waiters if t > seq]
        for future in ready:
            resolve(future, True, None)

    # -- the thread's connection and priority -----------------------------------

    def _open(self) -> None:
        self._db = open_database(
            self.path, busy_timeout_ms=self.busy_timeout_ms, check_same_thread=False
        )

    def _lower_priority(self) -> None:
        # This thread only. SCHED_IDLE: a waking thread of normal priority
        # (the event loop, with a turn) always preempts it at once, so
        # SQLite's inserts run in the time turns leave. A nice value only
        # weighs its share: the scheduler lets it finish its slice first,
        # and a turn waits that long (docs/storage.md has the figures).
        # The nice value is set first, also under SCHED_IDLE: it is the
        # priority `_pace` raises the thread to, and leaving SCHED_IDLE for
        # nice 19 needs only RLIMIT_NICE >= 1 where nice 0 would need 20.
        self._tid = tid = threading.get_native_id()
        try:
            if self.nice:
                os.setpriority(os.PRIO_PROCESS, tid, self.nice)
            if self.idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                self._idle_now = True
        except (OSError, AttributeError):
            log.warning("store writer: cannot lower its priority", extra={"fields": {}})

    def _pace(self) -> None:
        """Under SCHED_IDLE, a core kept busy by turns gives the thread
        nothing, and the queue would fill. So with `catch_up_at` operations
        behind, it runs at its nice value until it is down to `batch_max`."""
        if not self._idle_now and not self._catching_up:
            return
        behind = self._seq - self._done
        if self._idle_now and behind >= self.catch_up_at:
            policy = os.SCHED_OTHER
        elif not self._idle_now and behind <= self.batch_max:
            policy = os.SCHED_IDLE
        else:
            return
        assert self._tid is not None
        try:
            os.sched_setscheduler(self._tid, policy, os.sched_param(0))
        except OSError as exc:
            # Unprivileged, with RLIMIT_NICE 0: it stays SCHED_IDLE.
            log.warning(
                "store writer: cannot leave SCHED_IDLE to catch up; records may be"
                " dropped under sustained load (docs/storage.md)",
                extra={"fields": {"behind": behind, "error": str(exc)}},
            )
            self._idle_now = False  # it stays SCHED_IDLE; never try again
            return
        self._idle_now = policy == os.SCHED_IDLE
        self._catching_up = not self._idle_now
        if self._catching_up:
            self.catch_ups += 1
            log.info(
                "store writer behind, catching up at its nice value",
                extra={"fields": {"behind": behind, "nice": self.nice}},
            )

    def _handle(self, batch: list[_Item]) -> None:
        assert self._db is not None
        outcomes = apply_batch(
            self._db,
            [item.op for item in batch],
            [item.future is not None for item in batch],
            self.tally,
        )
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.future is not None:
                resolve(item.future, ok, value)
        self._finished(batch[-1].seq)

    def _shutdown(self) -> None:
        assert self._db is not None
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA optimize")
        self._db.close()


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
            (
                "ivrgw_store_catch_ups",
                w.catch_ups,
                "Times the SCHED_IDLE writer fell behind and ran at its nice value to catch up.",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)

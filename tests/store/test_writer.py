"""The writer thread, on a real SQLite file.

Batching is checked with the writer's counters, never with timing: the
operations are queued before the thread starts, so each batch is whatever
the rules take from a known queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from gateway.store.db import open_database
from gateway.store.readers import Readers
from gateway.store.writer import Sql, StoreCollector, WriteOp, Writer

INSERT = "INSERT INTO instances (InstanceId, Name, Concurrency, Status, CreateTime, ModifyTime) VALUES (?, ?, 1, 'Published', 0, 0)"


def insert(n: int) -> Sql:
    return Sql(INSERT, (f"i{n}", f"name {n}"))


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])


def names(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT InstanceId FROM instances ORDER BY rowid")]
    finally:
        db.close()


class Boom(NamedTuple):
    def apply(self, db: sqlite3.Connection) -> None:
        raise ValueError("boom")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "gateway.db"


@pytest.fixture
def writer(path: Path) -> Iterator[Writer]:
    w = Writer(path, queue_size=10_000, batch_max=100, batch_ms=60_000)
    yield w
    w.close()


def test_writer_commits_many_submits_in_few_transactions(writer: Writer, path: Path) -> None:
    for n in range(1000):
        assert writer.submit(insert(n))
    writer.start()
    writer.flush_sync(timeout=10)
    assert writer.commits == 10 and writer.written == 1000
    assert names(path) == [f"i{n}" for n in range(1000)]


def test_writer_flush_cuts_the_batch_wait_short(writer: Writer, path: Path) -> None:
    # batch_ms is a minute: only the flush makes this lone insert commit now.
    writer.start()
    writer.submit(insert(1))
    writer.flush_sync(timeout=10)
    assert writer.commits == 1 and names(path) == ["i1"]
    writer.flush_sync(timeout=1)  # nothing pending: returns at once
    assert writer.commits == 1


def test_writer_queue_full_refuses_counts_and_logs(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(path, queue_size=10, batch_max=100, batch_ms=0)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.store"):
            accepted = [writer.submit(insert(n)) for n in range(15)]
        assert accepted == [True] * 10 + [False] * 5
        assert writer.dropped == 5 and writer.queued == 10
        # One warning per interval, not one per drop.
        assert [r.getMessage() for r in caplog.records] == ["store queue full, write dropped"]
        writer.start()
        writer.flush_sync(timeout=10)
        assert names(path) == [f"i{n}" for n in range(10)]
        assert writer.submit(insert(99))  # room again
    finally:
        writer.close()


def test_writer_bad_operation_does_not_lose_its_batch(
    writer: Writer, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # insert(1) twice: the second breaks the UNIQUE name.
    ops: list[WriteOp[Any]] = [insert(1), Boom(), insert(2), insert(1), insert(3)]
    for op in ops:
        writer.submit(op)
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        writer.start()
        writer.flush_sync(timeout=10)
    assert names(path) == ["i1", "i2", "i3"]
    assert writer.failed == 2 and writer.retried_batches == 1
    assert writer.written == 3 and writer.commits == 3
    failures = [r for r in caplog.records if r.getMessage().startswith("store operation failed")]
    logged = [r.__dict__["fields"] for r in failures]
    assert logged[0]["op"] == "Boom()" and "boom" in logged[0]["error"]
    assert "i1" in logged[1]["op"] and "UNIQUE" in logged[1]["error"]
    # The thread lives on.
    writer.submit(insert(4))
    writer.flush_sync(timeout=10)
    assert names(path)[-1] == "i4"


def test_writer_close_flushes_then_refuses(path: Path) -> None:
    writer = Writer(path, queue_size=10_000, batch_max=64, batch_ms=60_000)
    writer.start()
    for n in range(500):
        writer.submit(insert(n))
    writer.close()
    assert len(names(path)) == 500 and writer.written == 500
    assert not writer.submit(insert(501))
    assert writer.dropped == 1
    writer.flush_sync(timeout=1)  # closed and drained: nothing to wait for
    with pytest.raises(RuntimeError, match="closed"):
        writer.call_future(insert(502))


def test_writer_flush_before_start_is_refused(writer: Writer) -> None:
    writer.submit(insert(1))
    with pytest.raises(RuntimeError, match="not started"):
        writer.flush_future()


def test_writer_close_without_start_counts_queue_as_dropped(path: Path) -> None:
    writer = Writer(path)
    for n in range(3):
        writer.submit(insert(n))
    writer.close()
    assert writer.dropped == 3 and writer.queued == 0
    writer.flush_sync(timeout=1)


def test_writer_async_call_flush_and_readers(writer: Writer, path: Path) -> None:
    writer.start()
    readers = Readers(path, threads=2)

    async def main() -> None:
        # call: the result once committed, never dropped, errors to the caller.
        assert await writer.call(insert(1)) == 1
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            await writer.call(insert(1))
        assert writer.failed == 0  # a call's error is the caller's, not a lost record
        for n in range(2, 300):
            writer.submit(insert(n))
        await writer.flush()
        assert await readers.run(count) == 299
        # run_sync: the same, in the calling thread.
        assert readers.run_sync(count) == 299

    try:
        asyncio.run(main())
    finally:
        readers.close()


def test_store_collector_reports_the_writer(writer: Writer) -> None:
    writer = Writer(writer.path, queue_size=2)
    for n in range(3):
        writer.submit(insert(n))
    samples = {
        s.name: s.value for metric in StoreCollector(writer).collect() for s in metric.samples
    }
    assert samples["ivrgw_records_dropped_total"] == 1
    assert samples["ivrgw_store_queue_depth"] == 2
    assert samples["ivrgw_store_commits_total"] == 0
    writer.close()


def test_open_database_alongside_a_running_writer(writer: Writer, path: Path) -> None:
    # A second process (a migration check, an export) can open the same file.
    writer.start()
    writer.submit(insert(1))
    writer.flush_sync(timeout=10)
    db = open_database(path)
    try:
        assert count(db) == 1
    finally:
        db.close()


def _policy(writer: Writer) -> tuple[int, int]:
    tid = writer.native_id
    assert tid is not None
    # The thread has set its priority before it takes its first batch.
    writer.submit(insert(1))
    writer.flush_sync(timeout=10)
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


def test_writer_thread_runs_under_sched_idle_by_default(writer: Writer) -> None:
    writer.start()
    # Idle, at nice 19: the priority it catches up at.
    assert _policy(writer) == (os.SCHED_IDLE, 19)
    # The rest of the process keeps its policy.
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_writer_thread_not_idle_runs_at_its_nice_value(path: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    writer = Writer(path, idle=False, nice=19)
    writer.start()
    try:
        assert _policy(writer) == (os.SCHED_OTHER, 19)
    finally:
        writer.close()
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the process's own is untouched


def _may_leave_sched_idle() -> bool:
    # Leaving SCHED_IDLE for nice 19 takes root, or RLIMIT_NICE >= 1.
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 1


@pytest.mark.skipif(not _may_leave_sched_idle(), reason="needs root or RLIMIT_NICE >= 1")
def test_writer_behind_leaves_sched_idle_until_it_caught_up(path: Path) -> None:
    writer = Writer(path, queue_size=10_000, batch_max=100, batch_ms=60_000)
    assert writer.catch_up_at == 1_000
    # Queued before the start: the first batch leaves 1,400 behind.
    for n in range(1_500):
        writer.submit(insert(n))
    writer.start()
    try:
        writer.flush_sync(timeout=10)
        assert writer.catch_ups == 1 and len(names(path)) == 1_500
        tid = writer.native_id
        assert tid is not None
        # Caught up: back under SCHED_IDLE, at its nice value all along.
        assert os.sched_getscheduler(tid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, tid) == 19
        samples = {
            s.name: s.value for metric in StoreCollector(writer).collect() for s in metric.samples
        }
        assert samples["ivrgw_store_catch_ups_total"] == 1
    finally:
        writer.close()

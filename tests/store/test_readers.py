"""Read-only connections beside a running writer, on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.store.readers import Readers
from gateway.store.writer import Sql, Writer

INSERT = "INSERT INTO instances (InstanceId, Name, Concurrency, Status, CreateTime, ModifyTime) VALUES (?, ?, 1, 'Published', 0, 0)"


def insert(n: int) -> Sql:
    return Sql(INSERT, (f"i{n}", f"name {n}"))


def count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])


class Gate(NamedTuple):
    """Holds the writer inside its open transaction until released."""

    entered: threading.Event
    release: threading.Event

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(INSERT, ("gated", "gated"))
        self.entered.set()
        assert self.release.wait(10)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def writer(path: Path) -> Iterator[Writer]:
    w = Writer(path, batch_ms=60_000)
    w.start()
    yield w
    w.close()


def test_readers_see_committed_data_while_the_writer_holds_a_transaction(
    writer: Writer, path: Path
) -> None:
    readers = Readers(path)
    gate = Gate(threading.Event(), threading.Event())
    try:
        for n in range(50):
            writer.submit(insert(n))
        writer.flush_sync(timeout=10)
        writer.submit(gate)
        writer.submit(insert(50))
        flushed = writer.flush_future()
        assert gate.entered.wait(10)
        # The writer is inside BEGIN IMMEDIATE with an uncommitted row: a
        # reader is not blocked and sees the last committed state.
        assert readers.run_sync(count) == 50
        assert not flushed.done()
        gate.release.set()
        flushed.result(10)
        assert readers.run_sync(count) == 52
    finally:
        gate.release.set()
        readers.close()


def test_readers_run_one_snapshot_per_call(writer: Writer, path: Path) -> None:
    readers = Readers(path)

    def two_reads(db: sqlite3.Connection) -> tuple[int, int]:
        first = count(db)
        writer.submit(insert(1000))
        writer.flush_sync(timeout=10)
        return first, count(db)

    try:
        writer.submit(insert(1))
        writer.flush_sync(timeout=10)
        assert readers.run_sync(two_reads) == (1, 1)
        assert readers.run_sync(count) == 2
    finally:
        readers.close()


def test_readers_run_off_the_loop_in_their_own_threads(writer: Writer, path: Path) -> None:
    readers = Readers(path, threads=2)

    def where(db: sqlite3.Connection) -> tuple[str, int]:
        return threading.current_thread().name, count(db)

    async def main() -> list[tuple[str, int]]:
        writer.submit(insert(1))
        await writer.flush()
        return list(await asyncio.gather(*(readers.run(where) for _ in range(20))))

    try:
        answers = asyncio.run(main())
        assert {n for _, n in answers} == {1}
        assert {name.split("_")[0] for name, _ in answers} == {"store-read"}
        assert len(readers._connections) <= 2
    finally:
        readers.close()
    assert readers._connections == []


def test_readers_cannot_write(writer: Writer, path: Path) -> None:
    readers = Readers(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            readers.run_sync(insert(1).apply)
        assert readers.run_sync(count) == 0
    finally:
        readers.close()

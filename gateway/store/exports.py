"""Export tasks: CSV files written by background threads, tracked in `export_tasks`.

Rules of this file:
- A task's row is written through the store's writer (`TaskStarted` before
  the thread starts, then `TaskFinished` or `TaskFailed`), never directly.
- The thread reads on its own read-only connection, inside one snapshot,
  and streams: rows go from the SQLite cursor through `csv.writer` to a
  buffered file, so memory stays flat whatever the row count.
- The file is written as `<name>.part` and renamed when complete: a link to
  an export never serves half a file.
- Files are UTF-8 with a byte order mark, so spreadsheet programs open
  Chinese text correctly, and `\\r\\n` line ends (RFC 4180).
- At most `max_running` exports run at once; the others wait (RUNNING) for
  a slot. The threads are daemons: a task cut short by the process exiting
  stays RUNNING in the database, and `AbandonRunning` marks it FAILED at the
  next start.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, Literal, NamedTuple

from gateway.store.db import connect
from gateway.store.writer import Writer

log = logging.getLogger("gateway.store.exports")

Kind = Literal["ConversationDetails", "StatisticalData"]
Status = Literal["RUNNING", "FINISHED", "FAILED"]
RUNNING: Final = "RUNNING"
FINISHED: Final = "FINISHED"
FAILED: Final = "FAILED"

PART = ".part"
# The file object's buffer: rows reach the disk in blocks this large.
BUFFER = 1 << 20
ABANDONED = "The gateway stopped before the export finished."

# (header, rows) for one export, read from a read-only connection.
Rows = tuple[Sequence[str], Iterable[Sequence[object]]]
Job = Callable[[sqlite3.Connection], Rows]


# -- write operations ---------------------------------------------------------


class TaskStarted(NamedTuple):
    task_id: str
    instance_id: str
    kind: Kind
    parameters: str  # JSON object: the request's filters
    create_time: int

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO export_tasks (TaskId, InstanceId, Kind, Status, Parameters, CreateTime)"
            " VALUES (?, ?, ?, 'RUNNING', ?, ?)",
            (self.task_id, self.instance_id, self.kind, self.parameters, self.create_time),
        )


class TaskFinished(NamedTuple):
    task_id: str
    file_path: str
    finish_time: int

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE export_tasks SET Status = 'FINISHED', FilePath = ?, FinishTime = ?"
            " WHERE TaskId = ?",
            (self.file_path, self.finish_time, self.task_id),
        )


class TaskFailed(NamedTuple):
    task_id: str
    error: str
    finish_time: int

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE export_tasks SET Status = 'FAILED', Error = ?, FinishTime = ? WHERE TaskId = ?",
            (self.error[:1000], self.finish_time, self.task_id),
        )


class AbandonRunning(NamedTuple):
    """At start-up: tasks a previous process left RUNNING will never finish."""

    finish_time: int

    def apply(self, db: sqlite3.Connection) -> int:
        return db.execute(
            "UPDATE export_tasks SET Status = 'FAILED', Error = ?, FinishTime = ?"
            " WHERE Status = 'RUNNING'",
            (ABANDONED, self.finish_time),
        ).rowcount


# -- reads ----------------------------------------------------------------------


class TaskRow(NamedTuple):
    task_id: str
    instance_id: str
    kind: str
    status: str
    file_path: str
    error: str


def task(db: sqlite3.Connection, instance_id: str, task_id: str) -> TaskRow | None:
    """The task, if it exists and belongs to the instance."""
    row = db.execute(
        "SELECT TaskId, InstanceId, Kind, Status, FilePath, Error FROM export_tasks"
        " WHERE TaskId = ? AND InstanceId = ?",
        (task_id, instance_id),
    ).fetchone()
    return None if row is None else TaskRow(*row)


# -- files ----------------------------------------------------------------------


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write `header` and `rows` to `path` (via `path.part`); return the row count."""
    part = path.with_name(path.name + PART)
    count = 0
    try:
        with part.open("w", encoding="utf-8-sig", newline="", buffering=BUFFER) as f:
            out = csv.writer(f)
            out.writerow(header)
            for row in rows:
                out.writerow(row)
                count += 1
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return count


def remove_partial(directory: Path) -> int:
    """Delete `*.part` files left by a process that died mid-export."""
    removed = 0
    for part in directory.glob(f"*{PART}") if directory.is_dir() else ():
        with contextlib.suppress(OSError):
            part.unlink()
            removed += 1
    return removed


# -- running ----------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


class Exporter:
    """Runs export jobs in background threads and records their outcome."""

    def __init__(
        self,
        db_path: Path,
        directory: Path,
        writer: Writer,
        *,
        max_running: int = 2,
        now_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.db_path = db_path
        self.directory = directory
        self.writer = writer
        self.now_ms = now_ms
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def start(self, task_id: str, file_name: str, job: Job) -> threading.Thread:
        """Run `job` into `<directory>/<file_name>` in a new thread.

        The caller has committed the task's `TaskStarted` row first.
        """
        thread = threading.Thread(
            target=self._run, args=(task_id, file_name, job), name=f"export-{task_id}", daemon=True
        )
        with self._lock:
            self._threads[task_id] = thread
        thread.start()
        return thread

    def _run(self, task_id: str, file_name: str, job: Job) -> None:
        path = self.directory / file_name
        try:
            with self._slots:
                self.directory.mkdir(parents=True, exist_ok=True)
                db = connect(self.db_path, read_only=True)
                try:
                    db.execute("BEGIN")  # one snapshot for the whole file
                    header, rows = job(db)
                    count = write_csv(path, header, rows)
                finally:
                    db.close()
            outcome: TaskFinished | TaskFailed = TaskFinished(task_id, str(path), self.now_ms())
            log.info("export finished", extra={"fields": {"task": task_id, "rows": count}})
        except Exception as exc:
            log.exception("export failed", extra={"fields": {"task": task_id}})
            outcome = TaskFailed(task_id, f"{type(exc).__name__}: {exc}", self.now_ms())
        try:
            # Never dropped, unlike records: the task's row must leave RUNNING.
            self.writer.call_future(outcome).result()
        except Exception:
            log.exception("export outcome not recorded", extra={"fields": {"task": task_id}})
        finally:
            with self._lock:
                self._threads.pop(task_id, None)

    @property
    def running(self) -> int:
        return len(self._threads)

    def __repr__(self) -> str:
        return f"Exporter({str(self.directory)!r}, running={self.running})"

"""Read-only connections for queries, run off the event loop.

Rules of this file:
- Nothing here writes: connections open the file with `mode=ro` and
  `query_only`, so a bug on a query path cannot change the database.
- Each call runs inside one read transaction: a page and its count read
  together come from one snapshot. Under WAL that snapshot is never blocked
  by the writer, even while it holds a transaction open.
- Queries run in the store's own small thread pool, one connection per
  thread, not in the loop's default executor: slow queries cannot starve
  name resolution and the other users of that executor, and the pool size
  bounds the connections.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from gateway.store.db import DEFAULT_BUSY_TIMEOUT_MS, connect

T = TypeVar("T")
P = ParamSpec("P")


class Readers:
    """`fn(db, *args)` on a read-only connection: `await run(...)` from the loop,
    `run_sync(...)` from a thread that may block (an export).

    The database must exist and be migrated first (`Writer.start` or
    `open_database`).
    """

    def __init__(
        self, path: Path, *, threads: int = 2, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="store-read")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(
                self.path,
                read_only=True,
                busy_timeout_ms=self.busy_timeout_ms,
                check_same_thread=False,
            )
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def run_sync(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`fn(db, *args)` in the calling thread, on that thread's own connection."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            return fn(db, *args, **kwargs)
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self.run_sync, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()

    def __repr__(self) -> str:
        return f"Readers({str(self.path)!r}, connections={len(self._connections)})"

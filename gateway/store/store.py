"""The store: the database file, its one writer thread and its readers, started and stopped once.

`open` runs at start-up, before the loop serves: it migrates the database,
copies the instance files in on its first start, and returns the stored
instances, which the gateway serves from then on. `start` and `aclose` run
in the lifespan: the writer thread starts before the first request and
`aclose` flushes every queued record before the process exits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.settings import StoreSettings
from gateway.store import catalog
from gateway.store.catalog import StoredInstance
from gateway.store.db import open_database
from gateway.store.readers import Readers
from gateway.store.writer import WriteOp, Writer


def now_ms(clock: Callable[[], float] = time.time) -> int:
    return int(clock() * 1000)


class Store:
    def __init__(self, settings: StoreSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.path = settings.path
        self.clock = clock
        self.writer = Writer(
            settings.path,
            queue_size=settings.queue_size,
            batch_max=settings.batch_max,
            batch_ms=settings.batch_ms,
            idle=settings.writer_idle,
            nice=settings.writer_nice,
        )
        self.readers = Readers(settings.path, threads=settings.read_threads)
        self.exports_dir = settings.exports_dir
        # The key of signed download links (gateway.api.links), from the database.
        self.link_key = b""
        self.seeded = False

    def open(self, documents: Iterable[Mapping[str, Any]]) -> list[StoredInstance]:
        """Migrate, seed from `documents` on the database's first start, and load.

        Blocking; call it at start-up.
        """
        db = open_database(self.path)
        try:
            self.seeded = catalog.seed(db, documents, now_ms(self.clock))
            self.link_key = catalog.link_secret(db)
            return catalog.load(db)
        finally:
            db.close()

    async def start(self) -> None:
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.writer.start)

    def record(self, op: WriteOp[Any]) -> bool:
        """Queue a record off the turn path: never blocks, False when dropped (counted)."""
        return self.writer.submit(op)

    def now_ms(self) -> int:
        return now_ms(self.clock)

    async def aclose(self) -> None:
        """Flush and stop the writer, then close the readers."""
        await self.writer.aclose()
        await asyncio.to_thread(self.readers.close)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {self.writer!r})"

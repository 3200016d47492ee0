"""One batch of write operations, applied in one transaction: the store writer's core.

Rules of this file:
- `apply_batch` owns the transaction: `BEGIN IMMEDIATE`, every operation's
  `apply`, `COMMIT`. An operation must not commit, roll back or begin.
- An operation that raises does not take its batch with it: the batch is
  rolled back and re-applied one operation per transaction; the bad one is
  logged with its repr, counted in `failed`, and skipped. An operation whose
  caller waits for the outcome (`is_call`) is not counted or logged: its
  exception is the caller's.
- Consecutive operations of a type with `apply_many(db, ops)` (the per-turn
  records) are applied in one call, an `executemany`.
- It runs in the writer thread (gateway.store.writer); neither the event
  loop nor a turn ever waits on it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

log = logging.getLogger("gateway.store")

T_co = TypeVar("T_co", covariant=True)

# A failing operation's repr is logged up to this many characters.
MAX_LOGGED_REPR = 500


class WriteOp(Protocol[T_co]):
    """One write, applied inside the writer's batch transaction.

    `apply` must not commit, roll back or begin: the writer owns the
    transaction. It may run twice (a failed batch is retried item by item
    after a rollback), so it must not have effects outside the database.
    """

    def apply(self, db: sqlite3.Connection) -> T_co: ...


class Tally:
    """What a writer has done: its counters, read by the metrics and tests."""

    __slots__ = ("commits", "failed", "retried_batches", "written")

    def __init__(self) -> None:
        self.commits = 0  # transactions committed
        self.written = 0  # operations committed
        self.failed = 0  # operations that raised and were skipped (not calls)
        self.retried_batches = 0  # batches rolled back and retried item by item

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.commits, self.written, self.failed, self.retried_batches)

    def __repr__(self) -> str:
        return (
            f"Tally(commits={self.commits}, written={self.written}, failed={self.failed},"
            f" retried_batches={self.retried_batches})"
        )


# An operation's outcome: (True, its result) or (False, its exception).
Outcome = tuple[bool, Any]


def apply_batch(
    db: sqlite3.Connection, ops: Sequence[WriteOp[Any]], is_call: Sequence[bool], tally: Tally
) -> list[Outcome]:
    """Apply `ops` in one transaction (or, when one fails, one by one); their outcomes in order."""
    try:
        db.execute("BEGIN IMMEDIATE")
        results = _apply_all(db, ops)
        db.execute("COMMIT")
    except Exception as exc:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        if len(ops) > 1:
            tally.retried_batches += 1
            log.warning(
                "store batch failed, retrying its operations one by one",
                extra={"fields": {"size": len(ops), "error": repr(exc)}},
            )
            outcomes: list[Outcome] = []
            for op, call in zip(ops, is_call, strict=True):
                outcomes.extend(apply_batch(db, [op], [call], tally))
            return outcomes
        if not is_call[0]:
            tally.failed += 1
            log.warning(
                "store operation failed and was skipped",
                extra={
                    "fields": {
                        "op": repr(ops[0])[:MAX_LOGGED_REPR],
                        "error": repr(exc),
                        "failed_total": tally.failed,
                    }
                },
            )
        return [(False, exc)]
    tally.commits += 1
    tally.written += len(ops)
    return [(True, result) for result in results]


def _apply_all(db: sqlite3.Connection, ops: Sequence[WriteOp[Any]]) -> list[Any]:
    """Each operation's result, in order. In a batch of several, a run of
    operations of one type that has `apply_many(db, ops)` (records) goes in
    one call, with None results."""
    results: list[Any] = []
    n = len(ops)
    i = 0
    while i < n:
        op = ops[i]
        many = getattr(type(op), "apply_many", None)
        # A single operation (and every one of a batch retried one by one)
        # takes its own `apply`, the path that repairs what `apply_many` assumes.
        if many is None or n == 1:
            results.append(op.apply(db))
            i += 1
            continue
        kind = type(op)
        j = i + 1
        while j < n and type(ops[j]) is kind:
            j += 1
        many(db, ops[i:j])
        results.extend([None] * (j - i))
        i = j
    return results

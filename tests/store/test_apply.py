"""One batch in one transaction, on a real SQLite file: outcomes, counters, `apply_many`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from gateway.store.apply import Tally, WriteOp, apply_batch
from gateway.store.db import open_database
from gateway.store.writer import Sql

INSERT = "INSERT INTO instances (InstanceId, Name, Concurrency, Status, CreateTime, ModifyTime) VALUES (?, ?, 1, 'Published', 0, 0)"


def insert(n: int) -> Sql:
    return Sql(INSERT, (f"i{n}", f"name {n}"))


# How `Many` operations were applied: the size of each call.
RUNS: list[int] = []


class Many(NamedTuple):
    """Records how it was applied: in a run (`apply_many`) or alone (`apply`)."""

    n: int

    @staticmethod
    def apply_many(db: sqlite3.Connection, ops: Sequence[Many]) -> None:
        RUNS.append(len(ops))
        db.executemany(INSERT, [(f"m{op.n}", f"many {op.n}") for op in ops])

    def apply(self, db: sqlite3.Connection) -> None:
        RUNS.append(1)
        db.execute(INSERT, (f"m{self.n}", f"many {self.n}"))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_database(tmp_path / "gateway.db")
    yield conn
    conn.close()


def ids(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT InstanceId FROM instances ORDER BY rowid")]


def test_apply_batch_commits_once_and_runs_of_a_type_go_in_one_call(
    db: sqlite3.Connection,
) -> None:
    RUNS.clear()
    ops: list[WriteOp[Any]] = [Many(1), Many(2), Many(3), insert(1), Many(4)]
    tally = Tally()
    outcomes = apply_batch(db, ops, [False] * 5, tally)
    assert outcomes == [(True, None)] * 3 + [(True, 1), (True, None)]
    assert RUNS == [3, 1]  # the run of three in one call; the last alone in its run
    assert tally.as_tuple() == (1, 5, 0, 0)
    assert ids(db) == ["m1", "m2", "m3", "i1", "m4"]


def test_apply_batch_skips_the_bad_one_and_a_calls_error_is_its_own(
    db: sqlite3.Connection,
) -> None:
    RUNS.clear()
    ops: list[WriteOp[Any]] = [Many(1), insert(1), Many(2), insert(1), insert(1)]
    tally = Tally()
    # The second insert(1) is a plain write: counted in `failed`; the third
    # is a call: its error is returned for its caller, not counted.
    outcomes = apply_batch(db, ops, [False, False, False, False, True], tally)
    assert [ok for ok, _ in outcomes] == [True, True, True, False, False]
    assert all(isinstance(v, sqlite3.IntegrityError) for _, v in outcomes[3:])
    assert tally.as_tuple() == (3, 3, 1, 1)
    # Retried one by one, each through its own `apply`.
    assert RUNS == [1, 1, 1, 1]
    assert ids(db) == ["m1", "i1", "m2"]
    assert not db.in_transaction

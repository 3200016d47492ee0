"""The database file: pragmas, schema v1, migrations, version checks, on real files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.store.db import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaTooNew,
    connect,
    open_database,
    schema_version,
)


def tables(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def plan(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str:
    return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_open_database_creates_parent_and_schema_from_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "var" / "gateway.db"
    db = open_database(path)
    try:
        assert path.exists()
        assert schema_version(db) == SCHEMA_VERSION == len(MIGRATIONS)
        assert tables(db) >= {"instances", "conversations", "conversation_details", "export_tasks"}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert columns(db, "conversations")[:12] == [
            "InstanceId", "ConversationId", "CallingNumber", "CalledNumber", "BeginTime",
            "EndTime", "TransferredToAgent", "SkillGroupId", "UserUtteranceCount",
            "EffectiveAnswerCount", "Debug", "FrontDoor",
        ]  # fmt: skip
        assert columns(db, "conversation_details")[1:] == [
            "InstanceId", "ConversationId", "SequenceId", "Speaker", "Utterance", "Action",
            "ActionParams", "CreateTime",
        ]  # fmt: skip
    finally:
        db.close()


def test_open_database_reopens_existing_file_without_migrating_again(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    db = open_database(path)
    db.execute(
        "INSERT INTO instances (InstanceId, Name, Concurrency, Status, CreateTime, ModifyTime)"
        " VALUES ('i1', 'demo', 10, 'Published', 1, 2)"
    )
    db.close()
    # V1's CREATE TABLE statements would fail if they ran a second time.
    db = open_database(path)
    try:
        assert schema_version(db) == SCHEMA_VERSION
        assert db.execute("SELECT Name, Concurrency FROM instances").fetchall() == [("demo", 10)]
    finally:
        db.close()


def test_open_database_refuses_a_newer_schema_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    raw.close()
    with pytest.raises(SchemaTooNew, match=f"version {SCHEMA_VERSION + 3} is newer") as info:
        open_database(path)
    assert info.value.found == SCHEMA_VERSION + 3 and info.value.known == SCHEMA_VERSION
    raw = sqlite3.connect(path)
    assert tables(raw) == set()
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 3
    raw.close()


def test_migrate_applies_only_the_missing_steps_in_order(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    seen: list[int] = []

    def step2(db: sqlite3.Connection) -> None:
        seen.append(schema_version(db))
        db.execute("ALTER TABLE t ADD COLUMN b TEXT NOT NULL DEFAULT 'x'")

    m1 = ("CREATE TABLE t (a INTEGER)", "INSERT INTO t (a) VALUES (1)")
    open_database(path, migrations=[m1]).close()
    db = open_database(path, migrations=[m1, step2])
    try:
        assert seen == [1]
        assert schema_version(db) == 2
        assert db.execute("SELECT a, b FROM t").fetchall() == [(1, "x")]
    finally:
        db.close()


def test_migrate_failure_rolls_the_step_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    m1 = ("CREATE TABLE t (a INTEGER)",)
    broken = ("CREATE TABLE u (a INTEGER)", "INSERT INTO nowhere VALUES (1)")
    open_database(path, migrations=[m1]).close()
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        open_database(path, migrations=[m1, broken])
    db = connect(path)
    try:
        assert schema_version(db) == 1
        assert tables(db) == {"t"}
    finally:
        db.close()


def test_connect_read_only_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    open_database(path).close()
    reader = connect(path, read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError):
            reader.execute("DELETE FROM instances")
        assert reader.execute("SELECT count(*) FROM conversations").fetchone() == (0,)
    finally:
        reader.close()


def test_schema_foreign_key_keeps_details_with_their_conversation(tmp_path: Path) -> None:
    db = open_database(tmp_path / "gateway.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            db.execute(
                "INSERT INTO conversation_details (InstanceId, ConversationId, SequenceId,"
                " Speaker, CreateTime) VALUES ('i', 'nobody', 1, 'Customer', 1)"
            )
        db.execute(
            "INSERT INTO conversations (InstanceId, ConversationId, BeginTime) VALUES ('i', 'c', 1)"
        )
        db.execute(
            "INSERT INTO conversation_details (InstanceId, ConversationId, SequenceId,"
            " Speaker, CreateTime) VALUES ('i', 'c', 1, 'Customer', 1)"
        )
        db.execute("DELETE FROM conversations")
        assert db.execute("SELECT count(*) FROM conversation_details").fetchone() == (0,)
    finally:
        db.close()


def test_schema_indexes_serve_the_seed_queries(tmp_path: Path) -> None:
    db = open_database(tmp_path / "gateway.db")
    try:
        # QueryConversations: an instance, a BeginTime range, newest first, a page.
        query = plan(
            db,
            "SELECT * FROM conversations WHERE InstanceId = ? AND BeginTime BETWEEN ? AND ?"
            " ORDER BY BeginTime DESC LIMIT 10 OFFSET 0",
            ("i", 0, 1),
        )
        assert "USING INDEX conversations_by_begin" in query and "TEMP B-TREE" not in query
        # ... filtered by CallingNumber.
        query = plan(
            db,
            "SELECT * FROM conversations WHERE InstanceId = ? AND CallingNumber = ?"
            " AND BeginTime BETWEEN ? AND ? ORDER BY BeginTime DESC LIMIT 10",
            ("i", "100", 0, 1),
        )
        assert "USING INDEX conversations_by_caller" in query and "TEMP B-TREE" not in query
        # ListConversationDetails: one conversation's lines in order, the
        # customer's line of a round before the chatbot's.
        query = plan(
            db,
            "SELECT * FROM conversation_details WHERE InstanceId = ? AND ConversationId = ?"
            " ORDER BY SequenceId, Speaker DESC",
            ("i", "c"),
        )
        assert "USING INDEX details_by_sequence" in query and "TEMP B-TREE" not in query
    finally:
        db.close()

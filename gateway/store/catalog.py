"""Instances in the database: stored documents, first-start seeding, the meta table.

Rules of this file:
- An instance is stored as its document: the same table an instance file
  holds (gateway.store.instances.parse_instance reads both), split over the
  `instances` columns. The navigation tables go in `NavigationConfig`,
  `TTSConfig` in its own column, the identity fields (InstanceId, Name,
  Description, Concurrency) in theirs, `Status` in its column, and
  everything else (the rules bot, `Chatbot`, `remote`) in `Extensions`.
  `document` puts the pieces back together.
- On the first start of a database, the instance files are copied in
  (`seed`), and `meta` remembers that it happened: after that the database
  is the source of truth, even when every instance has been deleted.
- Write operations are NamedTuples with `apply(db)`, run by the writer
  thread (gateway.store.writer) inside its transaction; reads take a
  connection and run inside the caller's transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

# The navigation tables of an instance document (seed §10.1, plus the
# gateway's FallbackConfig), stored together in the NavigationConfig column.
NAVIGATION_TABLES = (
    "GreetingConfig",
    "UnrecognizingConfig",
    "RepeatingConfig",
    "AskingBackConfig",
    "SilenceTimeoutConfig",
    "ComplainingConfig",
    "FallbackConfig",
)
IDENTITY = ("InstanceId", "Name", "Description", "Concurrency")
# `Enabled` in a file is `Status` in the database.
STATUS_KEY = "Enabled"
SEEDED = "instances_seeded_at"
LINK_SECRET = "link_secret"

_COLUMNS = (
    "InstanceId, Name, Description, Concurrency, Status, CreateTime, ModifyTime,"
    " ModifyUserName, NavigationConfig, TTSConfig, Extensions"
)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


class StoredInstance(NamedTuple):
    """One row of `instances`, with its document reassembled."""

    document: dict[str, Any]
    status: str
    create_time: int
    modify_time: int
    modify_user_name: str

    @property
    def instance_id(self) -> str:
        return str(self.document["InstanceId"])


def split(document: Mapping[str, Any]) -> tuple[str, str, str]:
    """NavigationConfig, TTSConfig and Extensions, as JSON texts."""
    navigation = {k: document[k] for k in NAVIGATION_TABLES if k in document}
    tts = document.get("TTSConfig", {})
    rest = {
        k: v
        for k, v in document.items()
        if k not in NAVIGATION_TABLES and k not in IDENTITY and k not in (STATUS_KEY, "TTSConfig")
    }
    return _json(navigation), _json(tts), _json(rest)


def document(row: sqlite3.Row | tuple[Any, ...]) -> StoredInstance:
    """A row selected with `_COLUMNS`, as a document parse_instance accepts."""
    (
        instance_id,
        name,
        description,
        concurrency,
        status,
        create_time,
        modify_time,
        user,
        navigation,
        tts,
        extensions,
    ) = row
    doc: dict[str, Any] = dict(orjson.loads(extensions))
    doc.update(
        InstanceId=instance_id,
        Name=name,
        Description=description,
        Concurrency=concurrency,
        Enabled=status == "Published",
    )
    doc.update(orjson.loads(navigation))
    tts_table = orjson.loads(tts)
    if tts_table:
        doc["TTSConfig"] = tts_table
    return StoredInstance(doc, status, create_time, modify_time, user)


def load(db: sqlite3.Connection) -> list[StoredInstance]:
    """Every stored instance, by InstanceId."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM instances ORDER BY InstanceId")
    return [document(row) for row in rows]


def load_page(db: sqlite3.Connection, offset: int, limit: int) -> tuple[int, list[StoredInstance]]:
    """The total count and one page of instances, oldest first (CreateTime, then InstanceId).

    Both come from one read transaction, so the count matches the page.
    """
    total = int(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM instances ORDER BY CreateTime, InstanceId LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return total, [document(row) for row in rows]


def load_one(db: sqlite3.Connection, instance_id: str) -> StoredInstance | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM instances WHERE InstanceId = ?", (instance_id,)
    ).fetchone()
    return None if row is None else document(row)


def meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT Value FROM meta WHERE Key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (Key, Value) VALUES (?, ?)"
        " ON CONFLICT (Key) DO UPDATE SET Value = excluded.Value",
        (key, value),
    )


def _insert(
    db: sqlite3.Connection, doc: Mapping[str, Any], status: str, now: int, user: str
) -> None:
    navigation, tts, extensions = split(doc)
    db.execute(
        f"INSERT INTO instances ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            doc["InstanceId"],
            doc.get("Name", doc["InstanceId"]),
            doc.get("Description", ""),
            doc.get("Concurrency", 100),
            status,
            now,
            now,
            user,
            navigation,
            tts,
            extensions,
        ),
    )


def status_of(doc: Mapping[str, Any]) -> str:
    return "Published" if doc.get(STATUS_KEY, True) else "Disabled"


def seed(db: sqlite3.Connection, documents: Iterable[Mapping[str, Any]], now: int) -> bool:
    """Copy the instance files in, once per database; True when this call did.

    Runs in its own write transaction, so two gateways starting on one new
    file seed it once.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if meta(db, SEEDED) is not None:
            db.execute("COMMIT")
            return False
        names: set[str] = set()
        for doc in documents:
            # Names are unique in the database (CreateInstance refuses a
            # duplicate) but not across files: a repeated name gets its id.
            name = str(doc.get("Name", doc["InstanceId"]))
            if name in names:
                doc = {**doc, "Name": f"{name} ({doc['InstanceId']})"}
            names.add(str(doc.get("Name")))
            _insert(db, doc, status_of(doc), now, "config")
        _set_meta(db, SEEDED, str(now))
        db.execute("COMMIT")
        return True
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def link_secret(db: sqlite3.Connection) -> bytes:
    """The key of signed download links, made once per database.

    Kept in the database (not in gateway.toml) so links stay valid across
    restarts, and a copied database does not share its key with a config.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        value = meta(db, LINK_SECRET)
        if value is None:
            value = secrets.token_hex(32)
            _set_meta(db, LINK_SECRET, value)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return bytes.fromhex(value)


# -- write operations (the management API, through Writer.call) ---------------


class InsertInstance(NamedTuple):
    """A new instance. A duplicate InstanceId or Name raises sqlite3.IntegrityError."""

    document: Mapping[str, Any]
    status: str
    now: int
    user: str

    def apply(self, db: sqlite3.Connection) -> None:
        _insert(db, self.document, self.status, self.now, self.user)


class ReplaceInstance(NamedTuple):
    """An instance's whole document and status, replaced in one statement.

    One UPDATE of every column: a reader sees the old row or the new one,
    never a mix. Returns the number of rows changed (0: no such instance).
    A Name another instance has raises sqlite3.IntegrityError.
    """

    document: Mapping[str, Any]
    status: str
    now: int
    user: str

    def apply(self, db: sqlite3.Connection) -> int:
        doc = self.document
        navigation, tts, extensions = split(doc)
        cursor = db.execute(
            "UPDATE instances SET Name = ?, Description = ?, Concurrency = ?, Status = ?,"
            " ModifyTime = ?, ModifyUserName = ?, NavigationConfig = ?, TTSConfig = ?,"
            " Extensions = ? WHERE InstanceId = ?",
            (
                doc.get("Name", doc["InstanceId"]),
                doc.get("Description", ""),
                doc.get("Concurrency", 100),
                self.status,
                self.now,
                self.user,
                navigation,
                tts,
                extensions,
                doc["InstanceId"],
            ),
        )
        return cursor.rowcount


class DeleteInstance(NamedTuple):
    """Remove an instance's row; its conversations stay. Returns rows deleted."""

    instance_id: str

    def apply(self, db: sqlite3.Connection) -> int:
        return db.execute(
            "DELETE FROM instances WHERE InstanceId = ?", (self.instance_id,)
        ).rowcount

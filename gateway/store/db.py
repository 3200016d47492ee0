"""The gateway's SQLite database: opening it, its pragmas, its versioned schema.

Rules of this file:
- Standard library `sqlite3` only. Every connection runs in autocommit mode
  (`isolation_level=None`): transactions are explicit `BEGIN ... COMMIT`, so
  nothing is committed or held open behind the caller's back.
- The journal is WAL and `synchronous=NORMAL`. The durability this buys: a
  committed transaction is in the WAL file when `COMMIT` returns, so it
  survives the gateway process being killed (even `kill -9`); an operating
  system crash or power loss may lose the last transactions committed before
  it (they were in the page cache, not yet fsynced; the next checkpoint
  fsyncs). The database is never corrupted either way. `FULL` would fsync on
  every commit for the last few milliseconds of records; not worth it here.
- The schema version is `PRAGMA user_version`. `MIGRATIONS[n]` takes a
  database from version n to n + 1; each runs in one `BEGIN IMMEDIATE`
  transaction with the version bump, so a crash mid-migration leaves the
  previous version intact. Migrations are append-only: once released, a
  migration is never edited; a change is a new migration.
- A database newer than the code is refused (`SchemaTooNew`), never touched.
- Column names are the VoiceNavigator API's field names (seed §7-§13); times
  are integer milliseconds since the epoch, booleans 0/1, JSON is TEXT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_PATH = Path("var/gateway.db")
DEFAULT_BUSY_TIMEOUT_MS = 5000
# After a checkpoint, the WAL file is truncated to at most this many bytes, so
# a burst of writes does not leave a large WAL file behind for good.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

Migration = Sequence[str] | Callable[[sqlite3.Connection], None]


class StoreError(Exception):
    """The database cannot be used as it is (raised at start-up)."""


class SchemaTooNew(StoreError):
    def __init__(self, path: Path, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"{path}: database schema version {found} is newer than this gateway knows"
            f" (up to {known}); run a gateway release that knows version {found},"
            " or point the store at another file"
        )


# -- schema version 1 ---------------------------------------------------------

# Deleting an instance leaves its conversations and exports in place (no
# foreign key points at instances): live conversations on a deleted instance
# finish normally and are still recorded. Conversation details do point at
# their conversation, so pruning old conversations takes their turns along.
V1 = (
    """
    CREATE TABLE instances (
        InstanceId           TEXT PRIMARY KEY,
        Name                 TEXT NOT NULL UNIQUE,
        Description          TEXT NOT NULL DEFAULT '',
        Concurrency          INTEGER NOT NULL CHECK (Concurrency >= 1),
        Status               TEXT NOT NULL,
        ApplicableOperations TEXT NOT NULL DEFAULT '[]',
        CreateTime           INTEGER NOT NULL,
        ModifyTime           INTEGER NOT NULL,
        ModifyUserName       TEXT NOT NULL DEFAULT '',
        NavigationConfig     TEXT NOT NULL DEFAULT '{}',
        TTSConfig            TEXT NOT NULL DEFAULT '{}',
        Extensions           TEXT NOT NULL DEFAULT '{}'
    )
    """,
    """
    CREATE TABLE conversations (
        InstanceId           TEXT NOT NULL,
        ConversationId       TEXT NOT NULL,
        CallingNumber        TEXT NOT NULL DEFAULT '',
        CalledNumber         TEXT NOT NULL DEFAULT '',
        BeginTime            INTEGER NOT NULL,
        EndTime              INTEGER,
        TransferredToAgent   INTEGER NOT NULL DEFAULT 0 CHECK (TransferredToAgent IN (0, 1)),
        SkillGroupId         TEXT NOT NULL DEFAULT '',
        UserUtteranceCount   INTEGER NOT NULL DEFAULT 0,
        EffectiveAnswerCount INTEGER NOT NULL DEFAULT 0,
        Debug                INTEGER NOT NULL DEFAULT 0 CHECK (Debug IN (0, 1)),
        FrontDoor            TEXT NOT NULL DEFAULT '',
        HangupCause          TEXT NOT NULL DEFAULT '',
        RecordingFileName    TEXT NOT NULL DEFAULT '',
        RecordingFilePath    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (InstanceId, ConversationId)
    )
    """,
    # QueryConversations / ListConversations / statistics: one instance's
    # conversations in a BeginTime range, newest first, optionally by caller.
    "CREATE INDEX conversations_by_begin ON conversations (InstanceId, BeginTime)",
    "CREATE INDEX conversations_by_caller ON conversations (InstanceId, CallingNumber, BeginTime)",
    """
    CREATE TABLE conversation_details (
        Id                   INTEGER PRIMARY KEY,
        InstanceId           TEXT NOT NULL,
        ConversationId       TEXT NOT NULL,
        SequenceId           INTEGER NOT NULL,
        Speaker              TEXT NOT NULL CHECK (Speaker IN ('Customer', 'Chatbot')),
        Utterance            TEXT NOT NULL DEFAULT '',
        Action               TEXT NOT NULL DEFAULT '',
        ActionParams         TEXT NOT NULL DEFAULT '{}',
        CreateTime           INTEGER NOT NULL,
        FOREIGN KEY (InstanceId, ConversationId)
            REFERENCES conversations (InstanceId, ConversationId) ON DELETE CASCADE
    )
    """,
    # ListConversationDetails in order (ORDER BY SequenceId, Speaker DESC:
    # within a round, 'Customer' sorts before 'Chatbot'); also makes a
    # replayed line a no-op.
    """
    CREATE UNIQUE INDEX details_by_sequence
        ON conversation_details (InstanceId, ConversationId, SequenceId, Speaker DESC)
    """,
    """
    CREATE TABLE export_tasks (
        TaskId               TEXT PRIMARY KEY,
        InstanceId           TEXT NOT NULL,
        Kind                 TEXT NOT NULL
                             CHECK (Kind IN ('ConversationDetails', 'StatisticalData')),
        Status               TEXT NOT NULL CHECK (Status IN ('RUNNING', 'FINISHED', 'FAILED')),
        Parameters           TEXT NOT NULL DEFAULT '{}',
        FilePath             TEXT NOT NULL DEFAULT '',
        Error                TEXT NOT NULL DEFAULT '',
        CreateTime           INTEGER NOT NULL,
        FinishTime           INTEGER
    )
    """,
    # Expiring old exports, and restarting: tasks left RUNNING by a dead
    # process are found by status.
    "CREATE INDEX export_tasks_by_status ON export_tasks (Status, CreateTime)",
)

# -- schema version 2 ---------------------------------------------------------

# `meta`: the store's own facts (when the instance files were seeded, the
# secret of signed download links). The conversation counters the statistics
# need beyond the seed's fields (docs/statistics.md): caller inputs the bot
# did not understand, silence timeouts, and the navigator's outcome of the
# last reply ("answer", "complaint", "unrecognized_final" ...).
V2 = (
    "CREATE TABLE meta (Key TEXT PRIMARY KEY, Value TEXT NOT NULL)",
    "ALTER TABLE conversations ADD COLUMN UnrecognizedCount INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE conversations ADD COLUMN SilenceTimeoutCount INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE conversations ADD COLUMN LastOutcome TEXT NOT NULL DEFAULT ''",
)

# MIGRATIONS[n] takes the database from user_version n to n + 1.
MIGRATIONS: tuple[Migration, ...] = (V1, V2)
SCHEMA_VERSION = len(MIGRATIONS)


# -- opening ------------------------------------------------------------------


def connect(
    path: Path,
    *,
    read_only: bool = False,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """One connection with the gateway's per-connection pragmas.

    A read-only connection opens the file by URI with `mode=ro` and sets
    `query_only`, so a bug in a query path cannot write. It does not migrate
    or create anything: open the database with `open_database` first.
    """
    if read_only:
        uri = path.resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=check_same_thread
        )
    else:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.execute("PRAGMA foreign_keys = ON")
        if read_only:
            db.execute("PRAGMA query_only = ON")
        else:
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    except BaseException:
        db.close()
        raise
    return db


def open_database(
    path: Path = DEFAULT_PATH,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    check_same_thread: bool = True,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path`, in WAL mode, migrated.

    The parent directory is created. Raises `SchemaTooNew` for a database
    written by a newer gateway and `StoreError` when WAL cannot be enabled
    (a file system without shared memory, for example).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = connect(path, busy_timeout_ms=busy_timeout_ms, check_same_thread=check_same_thread)
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot use WAL journal mode (got {mode!r})")
        migrate(db, path, migrations)
    except BaseException:
        db.close()
        raise
    return db


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    db: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Apply the migrations `db` lacks, each in its own transaction; return the version.

    The version is read again inside each write transaction, so two processes
    opening the same new file at once apply each migration exactly once.
    """
    known = len(migrations)
    found = schema_version(db)
    if found > known:
        raise SchemaTooNew(path, found, known)
    while found < known:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = schema_version(db)
            if found > known:
                raise SchemaTooNew(path, found, known)
            if found < known:
                step = migrations[found]
                if callable(step):
                    step(db)
                else:
                    for statement in step:
                        db.execute(statement)
                found += 1
                # user_version lives in the file header and is transactional.
                db.execute(f"PRAGMA user_version = {found}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return found

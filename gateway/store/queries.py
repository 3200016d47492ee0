"""Read queries over conversation records, run through `Readers.run(fn, ...)`.

Rules of this file:
- Every function takes a read-only connection first and returns plain
  tuples; none writes, commits or reads a clock.
- A page is found through an index, never a scan of the table: one
  instance's conversations by `conversations_by_begin (InstanceId,
  BeginTime)`, and with a caller filter by `conversations_by_caller
  (InstanceId, CallingNumber, BeginTime)`. Both give `BeginTime DESC`
  without a sort, and both cover the page's `count(*)`.
  tests/store/test_queries.py checks the plans.
- Time ranges are inclusive at both ends, in milliseconds since the epoch.
- What the statistics count is defined in docs/statistics.md; `_TALLY` is
  that definition in SQL and must change only together with the page.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

# The most lines ListConversationDetails returns for one conversation: far
# beyond any instance's turn budget, a bound on a response's size.
MAX_DETAILS = 10_000
# Rows fetched from SQLite at a time by the streaming readers.
FETCH = 1_000


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """QueryConversations' and ExportConversationDetails' filters."""

    instance_id: str
    calling_number: str = ""  # "" matches every caller
    begin_from: int | None = None  # BeginTime >= this
    begin_to: int | None = None  # BeginTime <= this

    def where(self, alias: str = "") -> tuple[str, list[object]]:
        """The WHERE clause (without the keyword) and its parameters."""
        a = f"{alias}." if alias else ""
        terms = [f"{a}InstanceId = ?"]
        params: list[object] = [self.instance_id]
        if self.calling_number:
            terms.append(f"{a}CallingNumber = ?")
            params.append(self.calling_number)
        if self.begin_from is not None:
            terms.append(f"{a}BeginTime >= ?")
            params.append(self.begin_from)
        if self.begin_to is not None:
            terms.append(f"{a}BeginTime <= ?")
            params.append(self.begin_to)
        return " AND ".join(terms), params


class ConversationRow(NamedTuple):
    conversation_id: str
    calling_number: str
    called_number: str
    begin_time: int
    end_time: int | None
    transferred_to_agent: bool
    skill_group_id: str
    user_utterance_count: int
    effective_answer_count: int
    recording_file_name: str
    recording_file_path: str


class Page(NamedTuple):
    total: int
    rows: list[ConversationRow]


class DetailRow(NamedTuple):
    sequence_id: int
    speaker: str
    utterance: str
    action: str
    action_params: str
    create_time: int


_CONVERSATION_COLUMNS = """
ConversationId, CallingNumber, CalledNumber, BeginTime, EndTime, TransferredToAgent,
SkillGroupId, UserUtteranceCount, EffectiveAnswerCount, RecordingFileName, RecordingFilePath
"""


def _conversation(row: Any) -> ConversationRow:
    """A row of `_CONVERSATION_COLUMNS` (sqlite3 rows are untyped)."""
    (cid, calling, called, begin, end, transferred, skill, utterances, effective, name, path) = row
    return ConversationRow(
        str(cid),
        str(calling),
        str(called),
        int(begin),
        None if end is None else int(end),
        bool(transferred),
        str(skill),
        int(utterances),
        int(effective),
        str(name),
        str(path),
    )


def page_sql(f: ConversationFilter) -> tuple[str, str, list[object]]:
    """The page's SELECT (LIMIT and OFFSET to append) and its count, with parameters."""
    where, params = f.where()
    select = (
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {where}"
        " ORDER BY BeginTime DESC, rowid DESC LIMIT ? OFFSET ?"
    )
    count = f"SELECT count(*) FROM conversations WHERE {where}"
    return select, count, params


def conversation_page(
    db: sqlite3.Connection, f: ConversationFilter, page_number: int, page_size: int
) -> Page:
    """One page of conversations, newest first, and how many match in all."""
    select, count, params = page_sql(f)
    total = int(db.execute(count, params).fetchone()[0])
    offset = (page_number - 1) * page_size
    if offset >= total:
        return Page(total, [])
    rows = db.execute(select, [*params, page_size, offset]).fetchall()
    return Page(total, [_conversation(r) for r in rows])


def conversation(
    db: sqlite3.Connection, instance_id: str, conversation_id: str
) -> ConversationRow | None:
    row = db.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
        " WHERE InstanceId = ? AND ConversationId = ?",
        (instance_id, conversation_id),
    ).fetchone()
    return None if row is None else _conversation(row)


def details(
    db: sqlite3.Connection, instance_id: str, conversation_id: str
) -> list[DetailRow] | None:
    """The conversation's lines in order (a round's Customer line first); None
    when there is no such conversation."""
    found = db.execute(
        "SELECT 1 FROM conversations WHERE InstanceId = ? AND ConversationId = ?",
        (instance_id, conversation_id),
    ).fetchone()
    if found is None:
        return None
    rows = db.execute(
        "SELECT SequenceId, Speaker, Utterance, Action, ActionParams, CreateTime"
        " FROM conversation_details WHERE InstanceId = ? AND ConversationId = ?"
        " ORDER BY SequenceId, Speaker DESC LIMIT ?",
        (instance_id, conversation_id, MAX_DETAILS),
    ).fetchall()
    return [DetailRow(*r) for r in rows]


def has_conversations(db: sqlite3.Connection, instance_id: str) -> bool:
    """True when anything is recorded for the instance (it may since have been deleted)."""
    row = db.execute(
        "SELECT 1 FROM conversations WHERE InstanceId = ? LIMIT 1", (instance_id,)
    ).fetchone()
    return row is not None


# -- exports ------------------------------------------------------------------

# Conversations in BeginTime order (ties by rowid, which the index also
# holds), each followed by its lines in order: no sort, a cursor that streams.
# CROSS JOIN makes SQLite keep conversations as the outer loop, whatever
# its statistics say; a plan led by the details would sort every line.
DETAIL_EXPORT_COLUMNS = (
    "ConversationId",
    "CallingNumber",
    "CalledNumber",
    "BeginTime",
    "EndTime",
    "SequenceId",
    "Speaker",
    "Utterance",
    "Action",
    "ActionParams",
    "CreateTime",
)


def detail_export_sql(f: ConversationFilter) -> tuple[str, list[object]]:
    where, params = f.where("c")
    sql = (
        "SELECT c.ConversationId, c.CallingNumber, c.CalledNumber, c.BeginTime, c.EndTime,"
        " d.SequenceId, d.Speaker, d.Utterance, d.Action, d.ActionParams, d.CreateTime"
        " FROM conversations AS c CROSS JOIN conversation_details AS d"
        " ON d.InstanceId = c.InstanceId AND d.ConversationId = c.ConversationId"
        f" WHERE {where}"
        " ORDER BY c.BeginTime, c.rowid, d.SequenceId, d.Speaker DESC"
    )
    return sql, params


def detail_lines(db: sqlite3.Connection, f: ConversationFilter) -> Iterator[tuple[Any, ...]]:
    """Every line of every matching conversation, streamed `FETCH` rows at a time."""
    sql, params = detail_export_sql(f)
    cursor = db.execute(sql, params)
    cursor.arraysize = FETCH
    while rows := cursor.fetchmany():
        yield from rows


# -- statistics (docs/statistics.md) ------------------------------------------


class Tally(NamedTuple):
    """What one time bucket (or the whole range) counts; the rates are ratios of these."""

    conversations: int = 0
    passed: int = 0
    resolved: int = 0
    inputs: int = 0
    effective: int = 0
    unrecognized: int = 0


def total(tallies: Iterable[Tally]) -> Tally:
    """The sum of `tallies`, field by field."""
    return Tally(*(sum(column) for column in zip(Tally(), *tallies, strict=True)))


# A conversation passes when, after at least one caller input, its last
# reply was an answer the bot understood; it is resolved when it passed and
# did not end transferred to an agent.
PASSED = "(UserUtteranceCount >= 1 AND LastOutcome = 'answer')"
RESOLVED = f"({PASSED} AND TransferredToAgent = 0)"

_TALLY = f"""
SELECT BeginTime / ? AS Bucket,
       count(*),
       total({PASSED}),
       total({RESOLVED}),
       total(UserUtteranceCount),
       total(EffectiveAnswerCount),
       total(UnrecognizedCount)
FROM conversations
WHERE InstanceId = ? AND BeginTime >= ? AND BeginTime <= ?
  AND Debug = 0 AND EndTime IS NOT NULL
GROUP BY Bucket
ORDER BY Bucket
"""


def tallies(
    db: sqlite3.Connection, instance_id: str, begin_from: int, begin_to: int, unit_ms: int
) -> dict[int, Tally]:
    """Counts per bucket (`BeginTime // unit_ms`) of the ended, non-debug
    conversations that began in [begin_from, begin_to]; empty buckets absent."""
    rows = db.execute(_TALLY, (unit_ms, instance_id, begin_from, begin_to))
    return {int(r[0]): Tally(*(int(v) for v in r[1:])) for r in rows}

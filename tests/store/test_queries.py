"""Read queries on a real SQLite file: results, order, filters and query plans."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import queries
from gateway.store.db import open_database
from gateway.store.queries import ConversationFilter, Tally
from gateway.store.records import ConversationBegun, ConversationEnded, Turn

HOUR = 3_600_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = open_database(tmp_path / "gateway.db")
    yield db
    db.close()


def write(db: sqlite3.Connection, *ops: object) -> None:
    db.execute("BEGIN IMMEDIATE")
    for op in ops:
        op.apply(db)  # type: ignore[attr-defined]
    db.execute("COMMIT")


def many(db: sqlite3.Connection, n: int, instances: int = 3, callers: int = 50) -> None:
    """`n` ended conversations, one a second, spread over instances and callers."""
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO conversations (InstanceId, ConversationId, CallingNumber, BeginTime, EndTime)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            (f"i{k % instances}", f"c{k}", f"138{k % callers:04d}", k * 1000, k * 1000 + 500)
            for k in range(n)
        ),
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")


def plan(db: sqlite3.Connection, sql: str, params: list[object]) -> str:
    return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params))


FILTERS = [
    ConversationFilter("i1"),
    ConversationFilter("i1", "1380007"),
    ConversationFilter("i1", "1380007", 5_000, 900_000),
    ConversationFilter("i1", "", 5_000, 900_000),
    ConversationFilter("i1", "", None, 900_000),
    ConversationFilter("i1", "1380007", 5_000),
]


@pytest.mark.parametrize("f", FILTERS, ids=repr)
def test_page_and_count_search_an_index_and_never_sort(db: sqlite3.Connection, f) -> None:  # type: ignore[no-untyped-def]
    many(db, 3_000)
    select, count, params = queries.page_sql(f)
    page_plan = plan(db, select, [*params, 10, 0])
    count_plan = plan(db, count, params)
    index = "conversations_by_caller" if f.calling_number else "conversations_by_begin"
    assert page_plan.startswith(f"SEARCH conversations USING INDEX {index}"), page_plan
    assert "TEMP B-TREE" not in page_plan and "SCAN" not in page_plan
    assert count_plan.startswith(f"SEARCH conversations USING COVERING INDEX {index}")


@pytest.mark.parametrize("f", FILTERS, ids=repr)
def test_detail_export_streams_without_a_sort(db: sqlite3.Connection, f) -> None:  # type: ignore[no-untyped-def]
    many(db, 3_000)
    sql, params = queries.detail_export_sql(f)
    p = plan(db, sql, params)
    assert p.startswith("SEARCH c USING INDEX"), p
    assert "SEARCH d USING INDEX details_by_sequence" in p
    assert "TEMP B-TREE" not in p and "SCAN" not in p


def test_statistics_read_a_range_of_the_begin_index(db: sqlite3.Connection) -> None:
    many(db, 3_000)
    p = plan(db, queries._TALLY, [HOUR, "i1", 0, 10**9])
    assert p.startswith("SEARCH conversations USING INDEX conversations_by_begin"), p
    assert "SCAN" not in p


def test_page_is_newest_first_and_counts_every_match(db: sqlite3.Connection) -> None:
    many(db, 300)
    first = queries.conversation_page(db, ConversationFilter("i0"), 1, 10)
    assert first.total == 100
    assert [r.begin_time for r in first.rows] == [297_000 - 3_000 * k for k in range(10)]
    last = queries.conversation_page(db, ConversationFilter("i0"), 10, 10)
    assert [r.begin_time for r in last.rows][-1] == 0
    beyond = queries.conversation_page(db, ConversationFilter("i0"), 11, 10)
    assert beyond.total == 100 and beyond.rows == []


def test_page_ties_on_begin_time_are_stable_across_pages(db: sqlite3.Connection) -> None:
    write(db, *(ConversationBegun("i", f"c{k}", 1_000) for k in range(25)))
    seen = [
        r.conversation_id
        for n in (1, 2, 3)
        for r in queries.conversation_page(db, ConversationFilter("i"), n, 10).rows
    ]
    assert sorted(seen) == sorted(f"c{k}" for k in range(25)) and len(set(seen)) == 25


def test_filters_caller_and_inclusive_time_range(db: sqlite3.Connection) -> None:
    many(db, 300, instances=1, callers=10)
    f = ConversationFilter("i0", "1380003", 3_000, 103_000)
    rows = queries.conversation_page(db, f, 1, 100).rows
    assert [r.begin_time for r in rows] == list(range(103_000, 2_999, -10_000))
    assert {r.calling_number for r in rows} == {"1380003"}
    only_left = queries.conversation_page(db, ConversationFilter("i0", "", 299_000), 1, 100)
    only_right = queries.conversation_page(db, ConversationFilter("i0", "", None, 1_000), 1, 100)
    assert only_left.total == 1 and only_right.total == 2


def test_conversation_fields_and_a_live_conversation(db: sqlite3.Connection) -> None:
    write(
        db,
        ConversationBegun("i", "live", 1_000, "13800000000", "95555"),
        ConversationBegun("i", "done", 2_000, "13900000000", "95555"),
        ConversationEnded("i", "done", 9_000, 3, 2, True, "sg-1", "EndDialogue"),
    )
    live = queries.conversation(db, "i", "live")
    done = queries.conversation(db, "i", "done")
    assert live is not None and live.end_time is None and live.transferred_to_agent is False
    assert done is not None and done.end_time == 9_000 and done.transferred_to_agent is True
    assert (done.skill_group_id, done.user_utterance_count, done.effective_answer_count) == (
        "sg-1",
        3,
        2,
    )
    assert queries.conversation(db, "i", "nope") is None
    assert queries.conversation(db, "other", "done") is None


def test_details_in_order_customer_before_chatbot(db: sqlite3.Connection) -> None:
    write(
        db,
        ConversationBegun("i", "c", 1_000),
        Turn("i", "c", 1, "Chatbot", "您好，请问有什么可以帮您", "Broadcast", 1_200),
        Turn("i", "c", 0, "Chatbot", "欢迎致电", "Broadcast", 1_000),
        Turn("i", "c", 1, "Customer", "查话费", "Dialogue", 1_100),
    )
    lines = queries.details(db, "i", "c")
    assert lines is not None
    assert [(line.sequence_id, line.speaker) for line in lines] == [
        (0, "Chatbot"),
        (1, "Customer"),
        (1, "Chatbot"),
    ]
    assert lines[1].utterance == "查话费"
    assert queries.details(db, "i", "unknown") is None
    write(db, ConversationBegun("i", "empty", 1_000))
    assert queries.details(db, "i", "empty") == []


def test_has_conversations(db: sqlite3.Connection) -> None:
    write(db, ConversationBegun("gone", "c", 1_000))
    assert queries.has_conversations(db, "gone")
    assert not queries.has_conversations(db, "never")


def test_detail_lines_join_conversations_in_begin_order(db: sqlite3.Connection) -> None:
    write(
        db,
        ConversationBegun("i", "b", 2_000, "1002"),
        ConversationBegun("i", "a", 1_000, "1001"),
        Turn("i", "b", 0, "Chatbot", "hi b", "Broadcast", 2_000),
        Turn("i", "a", 1, "Customer", "x", "Dialogue", 1_100),
        Turn("i", "a", 0, "Chatbot", "hi a", "Broadcast", 1_000),
        Turn("i", "a", 1, "Chatbot", "y", "HangUp", 1_200),
    )
    lines = list(queries.detail_lines(db, ConversationFilter("i")))
    assert [(r[0], r[5], r[6]) for r in lines] == [
        ("a", 0, "Chatbot"),
        ("a", 1, "Customer"),
        ("a", 1, "Chatbot"),
        ("b", 0, "Chatbot"),
    ]
    assert list(queries.detail_lines(db, ConversationFilter("i", "1002"))) == [lines[-1]]


def test_tallies_count_ended_non_debug_conversations_per_bucket(db: sqlite3.Connection) -> None:
    write(
        db,
        # hour 0: one resolved, one passed but transferred, one debug, one live
        ConversationBegun("i", "resolved", 10),
        ConversationEnded("i", "resolved", 20, 2, 2, last_outcome="answer"),
        ConversationBegun("i", "agent", 20),
        ConversationEnded("i", "agent", 30, 3, 2, True, "sg", "", 1, 0, "answer"),
        ConversationBegun("i", "debug", 30, debug=True),
        ConversationEnded("i", "debug", 40, 5, 5, last_outcome="answer"),
        ConversationBegun("i", "live", 40),
        # hour 2: gave up after two unrecognized inputs
        ConversationBegun("i", "failed", 2 * HOUR + 5),
        ConversationEnded(
            "i", "failed", 2 * HOUR + 9, 2, 0, True, "", "", 2, 1, "unrecognized_final"
        ),
    )
    found = queries.tallies(db, "i", 0, 3 * HOUR, HOUR)
    assert found == {
        0: Tally(conversations=2, passed=2, resolved=1, inputs=5, effective=4, unrecognized=1),
        2: Tally(conversations=1, passed=0, resolved=0, inputs=2, effective=0, unrecognized=2),
    }
    assert queries.total(found.values()) == Tally(3, 2, 1, 7, 4, 3)
    assert queries.total([]) == Tally()
    assert queries.tallies(db, "i", 25, 3 * HOUR, HOUR) == {2: found[2]}

"""Conversation records through a real writer into a real SQLite file, and a kill -9."""

from __future__ import annotations

import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.db import connect
from gateway.store.records import (
    CHATBOT,
    CUSTOMER,
    ConversationBegun,
    ConversationEnded,
    Record,
    RecordingSaved,
    Turn,
)
from gateway.store.writer import Writer

ROOT = Path(__file__).resolve().parents[2]

CONVERSATION = (
    "SELECT CallingNumber, CalledNumber, BeginTime, EndTime, TransferredToAgent, SkillGroupId,"
    " UserUtteranceCount, EffectiveAnswerCount, Debug, FrontDoor, HangupCause"
    " FROM conversations WHERE InstanceId = ? AND ConversationId = ?"
)
DETAILS = (
    "SELECT SequenceId, Speaker, Utterance, Action, ActionParams, CreateTime"
    " FROM conversation_details WHERE InstanceId = ? AND ConversationId = ?"
    " ORDER BY SequenceId, Speaker DESC"
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def writer(path: Path) -> Iterator[Writer]:
    w = Writer(path, batch_ms=60_000)
    w.start()
    yield w
    w.close()


def written(writer: Writer, *records: Record) -> sqlite3.Connection:
    for record in records:
        assert writer.submit(record)
    writer.flush_sync(timeout=10)
    assert writer.failed == 0
    return connect(writer.path, read_only=True)


SKILL = '{"skillGroupId":"AAA"}'


def test_records_a_whole_conversation(writer: Writer) -> None:
    db = written(
        writer,
        ConversationBegun("i1", "c1", 1000, "13800000000", "95555", front_door="freeswitch"),
        Turn("i1", "c1", 0, CHATBOT, "您好，请问有什么可以帮您？", "Broadcast", 1001),
        Turn("i1", "c1", 1, CUSTOMER, "查余额", "Dialogue", 2000),
        Turn("i1", "c1", 1, CHATBOT, "您的余额是100元", "Broadcast", 2001),
        Turn("i1", "c1", 2, CUSTOMER, "0", "CollectedNumber", 3000),
        Turn("i1", "c1", 2, CHATBOT, "正在为您转接", "TransferToAgent", 3001, SKILL),
        ConversationEnded("i1", "c1", 3002, 2, 1, True, "AAA", "TransferToAgent"),
    )
    try:
        assert db.execute(CONVERSATION, ("i1", "c1")).fetchone() == (
            "13800000000", "95555", 1000, 3002, 1, "AAA", 2, 1, 0, "freeswitch", "TransferToAgent",
        )  # fmt: skip
        assert db.execute(DETAILS, ("i1", "c1")).fetchall() == [
            (0, "Chatbot", "您好，请问有什么可以帮您？", "Broadcast", "{}", 1001),
            (1, "Customer", "查余额", "Dialogue", "{}", 2000),
            (1, "Chatbot", "您的余额是100元", "Broadcast", "{}", 2001),
            (2, "Customer", "0", "CollectedNumber", "{}", 3000),
            (2, "Chatbot", "正在为您转接", "TransferToAgent", SKILL, 3001),
        ]
    finally:
        db.close()


def test_records_without_their_begin_still_make_a_conversation(writer: Writer) -> None:
    # The ConversationBegun was dropped (queue full) or the gateway restarted mid-call.
    db = written(
        writer,
        Turn("i1", "late", 4, CUSTOMER, "还在吗", "Dialogue", 5000),
        ConversationEnded("i1", "late", 6000, 1, 0, hangup_cause="NORMAL_CLEARING"),
        ConversationEnded("i1", "ended-only", 7000),
        RecordingSaved("i1", "recorded-only", 8000, "late.wav", "/var/rec/late.wav"),
    )
    try:
        row = db.execute(CONVERSATION, ("i1", "late")).fetchone()
        assert row[:4] == ("", "", 5000, 6000) and row[-1] == "NORMAL_CLEARING"
        assert db.execute(DETAILS, ("i1", "late")).fetchall() == [
            (4, "Customer", "还在吗", "Dialogue", "{}", 5000)
        ]
        assert db.execute(CONVERSATION, ("i1", "ended-only")).fetchone()[2:4] == (7000, 7000)
        assert db.execute(
            "SELECT BeginTime, RecordingFileName, RecordingFilePath FROM conversations"
            " WHERE ConversationId = 'recorded-only'"
        ).fetchone() == (8000, "late.wav", "/var/rec/late.wav")
    finally:
        db.close()


def test_records_a_replayed_turn_line_is_ignored(writer: Writer) -> None:
    db = written(
        writer,
        ConversationBegun("i1", "c1", 1000, "1"),
        Turn("i1", "c1", 1, CUSTOMER, "first", "Dialogue", 2000),
        Turn("i1", "c1", 1, CUSTOMER, "replayed", "Dialogue", 2500),
    )
    try:
        assert [r[2] for r in db.execute(DETAILS, ("i1", "c1"))] == ["first"]
    finally:
        db.close()


def test_records_begun_fills_a_row_a_turn_created_and_keeps_ids_per_instance(
    writer: Writer,
) -> None:
    db = written(
        writer,
        Turn("i1", "same", 0, CHATBOT, "hello", "Broadcast", 1500),
        ConversationBegun("i1", "same", 1000, "100", "200", debug=True, front_door="rpc"),
        ConversationBegun("i2", "same", 1100, "300", "400", front_door="websocket"),
        RecordingSaved("i1", "same", 9000, "same.wav", "https://pbx/recordings/same.wav"),
    )
    try:
        one = db.execute(CONVERSATION, ("i1", "same")).fetchone()
        two = db.execute(CONVERSATION, ("i2", "same")).fetchone()
        assert one[:4] == ("100", "200", 1000, None) and one[8:10] == (1, "rpc")
        assert two[:4] == ("300", "400", 1100, None) and two[8:10] == (0, "websocket")
        assert db.execute(
            "SELECT RecordingFileName, RecordingFilePath FROM conversations"
            " WHERE InstanceId = 'i1' AND ConversationId = 'same'"
        ).fetchone() == ("same.wav", "https://pbx/recordings/same.wav")
    finally:
        db.close()


def test_records_a_bad_record_is_skipped_and_counted(writer: Writer) -> None:
    writer.submit(ConversationBegun("i1", "c1", 1000))
    writer.submit(Turn("i1", "c1", 1, "Nobody", "?", "Dialogue", 1001))  # type: ignore[arg-type]
    writer.submit(Turn("i1", "c1", 1, CUSTOMER, "ok", "Dialogue", 1002))
    writer.flush_sync(timeout=10)
    assert writer.failed == 1
    db = connect(writer.path, read_only=True)
    try:
        assert [r[2] for r in db.execute(DETAILS, ("i1", "c1"))] == ["ok"]
    finally:
        db.close()


# A gateway stand-in: records turns, flushes, says so, keeps recording (and
# saying how far each later flush got), then stalls inside a write
# transaction holding uncommitted turns, and says that too. It is killed there.
CHILD = """
import sys, time
from pathlib import Path
from gateway.store.records import ConversationBegun, Turn
from gateway.store.writer import Writer

class Stall(Turn):
    def apply(self, db):
        super().apply(db)
        print("in transaction", flush=True)
        time.sleep(60)

path, before = Path(sys.argv[1]), int(sys.argv[2])
writer = Writer(path, batch_max=64, batch_ms=0)
writer.start()
writer.submit(ConversationBegun("i", "before", 0, "100"))
for seq in range(before):
    writer.submit(Turn("i", "before", seq, "Customer", f"said {seq}", "Dialogue", seq))
writer.flush_sync(timeout=30)
print("committed", flush=True)
writer.submit(ConversationBegun("i", "after", 0, "100"))
for seq in range(1500):
    writer.submit(Turn("i", "after", seq, "Customer", f"said {seq}", "Dialogue", seq))
    if seq % 500 == 499:
        writer.flush_sync(timeout=30)
        print(f"flushed {seq + 1}", flush=True)
for seq in range(1500, 1510):
    writer.submit(Turn("i", "after", seq, "Customer", f"said {seq}", "Dialogue", seq))
writer.submit(Stall("i", "after", 1510, "Customer", "never committed", "Dialogue", 1510))
time.sleep(60)
"""


def test_records_committed_before_kill_9_survive_it(path: Path) -> None:
    before = 2000
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(before)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            # Kill inside a write transaction, after "committed" and later flushes.
            while not lines or lines[-1] != "in transaction":
                assert time.monotonic() < deadline, f"child stalled after {lines}"
                if sel.select(timeout=1):
                    line = proc.stdout.readline()
                    assert line, f"child exited early: {proc.poll()} after {lines}"
                    lines.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
    assert lines == ["committed", "flushed 500", "flushed 1000", "flushed 1500", "in transaction"]

    db = connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute(
            "SELECT SequenceId, Utterance FROM conversation_details"
            " WHERE ConversationId = 'before' ORDER BY SequenceId"
        ).fetchall()
        assert rows == [(seq, f"said {seq}") for seq in range(before)]
        after = {
            r[0]
            for r in db.execute(
                "SELECT SequenceId FROM conversation_details WHERE ConversationId = 'after'"
            )
        }
        # Every flushed turn is there; the stalled transaction left nothing.
        assert set(range(1500)) <= after and 1510 not in after
    finally:
        db.close()

"""The recorder: turns become rows, through a real writer thread and a real SQLite file,
and through real gateway processes (RPC and the JSON webhook)."""

from __future__ import annotations

import http.client
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.dialogue.operations import (
    Action,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Reply,
    SilenceTimeout,
)
from gateway.net.signing import percent_encode
from gateway.store.db import connect
from gateway.store.recorder import Recorder
from gateway.store.writer import Writer
from tests.conftest import Client, GatewayProcess, conversation_id, write_config

HELLO = Reply("hello", Action.BROADCAST, True, "{}", 10)
TRANSFER = Reply("to an agent", Action.TRANSFER_TO_AGENT, False, '{"skillGroupId": "g7"}', 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    db = connect(path, read_only=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    w = Writer(tmp_path / "gateway.db", batch_ms=1)
    w.start()
    yield w
    w.close()


def test_recorder_writes_rounds_counters_and_the_end(writer: Writer, tmp_path: Path) -> None:
    clock = Clock()
    r = Recorder(writer.submit, idle_timeout=60, wall=lambda: 1_700_000_000.5, clock=clock)
    r.turn("rpc", "demo", "c1", BeginDialogue("138", "400"), HELLO, "greeting", debug=True)
    r.turn("rpc", "demo", "c1", Dialogue("余额"), HELLO, "answer")
    r.turn("rpc", "demo", "c1", Dialogue("嗯嗯"), HELLO, "unrecognized")
    r.turn("rpc", "demo", "c1", CollectedNumber("1#"), HELLO, "answer")
    r.turn("rpc", "demo", "c1", SilenceTimeout(), HELLO, "silence")
    r.turn("rpc", "demo", "c1", Dialogue("转人工"), TRANSFER, "complaint")
    r.turn("rpc", "demo", "c1", EndDialogue("NORMAL_CLEARING"), None, "")
    assert len(r) == 0
    writer.flush_sync(10)
    path = tmp_path / "gateway.db"
    conv = rows(
        path,
        "SELECT CallingNumber, CalledNumber, BeginTime, EndTime, Debug, FrontDoor,"
        " UserUtteranceCount, EffectiveAnswerCount, UnrecognizedCount, SilenceTimeoutCount,"
        " TransferredToAgent, SkillGroupId, HangupCause, LastOutcome FROM conversations",
    )
    assert conv == [
        (
            "138",
            "400",
            1_700_000_000_500,
            1_700_000_000_500,
            1,
            "rpc",
            4,
            2,
            1,
            1,
            1,
            "g7",
            "NORMAL_CLEARING",
            "complaint",
        )
    ]
    lines = rows(
        path,
        "SELECT SequenceId, Speaker, Utterance, Action, ActionParams FROM conversation_details"
        " ORDER BY SequenceId, Speaker DESC",
    )
    assert lines == [
        (0, "Chatbot", "hello", "Broadcast", "{}"),
        (1, "Customer", "余额", "Dialogue", "{}"),
        (1, "Chatbot", "hello", "Broadcast", "{}"),
        (2, "Customer", "嗯嗯", "Dialogue", "{}"),
        (2, "Chatbot", "hello", "Broadcast", "{}"),
        (3, "Customer", "1#", "CollectedNumber", "{}"),
        (3, "Chatbot", "hello", "Broadcast", "{}"),
        (4, "Customer", "", "SilenceTimeout", "{}"),
        (4, "Chatbot", "hello", "Broadcast", "{}"),
        (5, "Customer", "转人工", "Dialogue", "{}"),
        (5, "Chatbot", "to an agent", "TransferToAgent", '{"skillGroupId": "g7"}'),
    ]


def test_recorder_expires_idle_conversations_and_keeps_busy_ones(
    writer: Writer, tmp_path: Path
) -> None:
    clock = Clock()
    r = Recorder(writer.submit, idle_timeout=60, clock=clock)
    r.turn("freeswitch", "demo", "idle", BeginDialogue("1"), HELLO, "greeting")
    r.turn("freeswitch", "demo", "busy", BeginDialogue("2"), HELLO, "greeting")
    clock.now += 59
    r.turn("freeswitch", "demo", "busy", Dialogue("x"), HELLO, "answer")
    clock.now += 2
    assert r.expire() == 1 and len(r) == 1
    writer.flush_sync(10)
    ended = rows(
        tmp_path / "gateway.db",
        "SELECT ConversationId, HangupCause, EndTime IS NOT NULL FROM conversations"
        " ORDER BY ConversationId",
    )
    assert ended == [("busy", "", 0), ("idle", "Expired", 1)]


def test_recorder_numbers_rounds_of_a_conversation_it_did_not_see_begin(
    writer: Writer, tmp_path: Path
) -> None:
    r = Recorder(writer.submit, idle_timeout=60)
    r.turn("rpc", "demo", "after-restart", Dialogue("hi"), HELLO, "answer")
    r.turn("rpc", "demo", "after-restart", EndDialogue(), None, "")
    writer.flush_sync(10)
    path = tmp_path / "gateway.db"
    assert rows(path, "SELECT HangupCause, UserUtteranceCount FROM conversations") == [
        ("EndDialogue", 1)
    ]
    assert rows(path, "SELECT SequenceId, Speaker FROM conversation_details") == [
        (1, "Customer"),
        (1, "Chatbot"),
    ]


def test_a_full_queue_drops_records_and_the_turn_goes_on(tmp_path: Path) -> None:
    w = Writer(tmp_path / "gateway.db", queue_size=3)  # not started: nothing drains
    r = Recorder(w.submit, idle_timeout=60)
    for n in range(5):
        r.turn("rpc", "demo", f"c{n}", BeginDialogue("1"), HELLO, "greeting")
    assert w.dropped == 7  # 5 conversations x (begun + greeting round) - 3 queued
    w.close()


# -- through real gateway processes ---------------------------------------------


TOKEN = "webhook-token-0123456789"


def _post(port: int, call: str, body: object) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/v1/calls/{call}/events",
            orjson.dumps(body),
            {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        r = conn.getresponse()
        assert r.status == 200
        return orjson.loads(r.read())
    finally:
        conn.close()


def test_conversations_over_rpc_and_the_webhook_are_recorded_and_flushed_at_shutdown(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        extra=f"""
[adapters.webhook]
enabled = true
tokens = ["{TOKEN}"]
""",
    )
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    rpc_call, hook_call, retried = conversation_id(), conversation_id(), conversation_id()
    try:
        with Client(gw.port) as c:
            base = {"InstanceId": "demo", "ConversationId": rpc_call}
            assert c.call({"Action": "BeginDialogue", "CallingNumber": "13800000000", **base})
            r = c.call({"Action": "Dialogue", "Utterance": "查询余额", **base})
            assert r.status == 200
            # A retried turn (same signed request) is answered again, recorded once.
            p = c.signed_v1_params({"Action": "Dialogue", "Utterance": "营业时间", **base})
            query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in p.items())
            first = c.raw("GET", "/?" + query)
            again = c.raw("GET", "/?" + query)
            assert first.status == again.status == 200
            assert first.json["TextResponse"] == again.json["TextResponse"]
            hang_up = orjson.dumps({"hangUpCause": "USER_BUSY"}).decode()
            r = c.call({"Action": "EndDialogue", "HangUpParams": hang_up, **base})
            assert r.status == 200
            debug = {"InstanceId": "demo", "ConversationId": retried}
            r = c.call({"Action": "DebugBeginDialogue", "CallingNumber": "1", **debug})
            assert r.status == 200
        _post(gw.port, hook_call, {"type": "start", "instance_id": "demo", "calling": "1001"})
        _post(gw.port, hook_call, {"type": "digits", "instance_id": "demo", "digits": "0"})
        _post(gw.port, hook_call, {"type": "end", "instance_id": "demo", "cause": "NO_ANSWER"})
    finally:
        gw.stop()  # SIGTERM: the lifespan flushes the queue before exit
    path = tmp_path / "var" / "gateway.db"
    got = {
        row[0]: row[1:]
        for row in rows(
            path,
            "SELECT ConversationId, FrontDoor, Debug, UserUtteranceCount, EffectiveAnswerCount,"
            " HangupCause, TransferredToAgent, SkillGroupId, EndTime IS NOT NULL"
            " FROM conversations",
        )
    }
    assert got[rpc_call] == ("rpc", 0, 2, 2, "USER_BUSY", 0, "", 1)
    assert got[retried] == ("rpc", 1, 0, 0, "", 0, "", 0)
    assert got[hook_call] == ("webhook", 0, 1, 1, "NO_ANSWER", 1, "general", 1)
    lines = rows(
        path,
        "SELECT SequenceId, Speaker, Utterance, Action FROM conversation_details"
        " WHERE ConversationId = ? ORDER BY SequenceId, Speaker DESC",
        rpc_call,
    )
    assert [(n, s, a) for n, s, _, a in lines] == [
        (0, "Chatbot", "Broadcast"),
        (1, "Customer", "Dialogue"),
        (1, "Chatbot", "Broadcast"),
        (2, "Customer", "Dialogue"),
        (2, "Chatbot", "Broadcast"),
    ]
    assert lines[1][2] == "查询余额" and lines[3][2] == "营业时间"
    assert "营业时间" in lines[4][2] or "9" in lines[4][2]  # the chatbot's answer
    assert "write dropped" not in gw.logs()


def test_records_survive_in_the_database_across_restarts(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    call = conversation_id()
    for _ in range(2):
        gw = GatewayProcess(config, tmp_path / "gateway.log")
        try:
            with Client(gw.port) as c:
                r = c.call(
                    {
                        "Action": "BeginDialogue",
                        "InstanceId": "demo",
                        "ConversationId": call,
                        "CallingNumber": "1",
                    }
                )
                assert r.status == 200
        finally:
            gw.stop()
        call = call + "-2"
    db = sqlite3.connect(tmp_path / "var" / "gateway.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 2
    finally:
        db.close()


def test_rounds_without_a_conversation_row_fall_back_and_are_kept(
    writer: Writer, tmp_path: Path
) -> None:
    from gateway.store.records import ConversationBegun, Round

    writer.submit(ConversationBegun("demo", "known", 1, "1"))
    for n in range(1, 4):
        writer.submit(Round("demo", "known", n, 2, "hi", "Dialogue", "ok", "Broadcast"))
        # No row for "orphan": the batch's executemany fails on the foreign key.
        writer.submit(Round("demo", "orphan", n, 2, "hi", "Dialogue", "ok", "Broadcast"))
    writer.flush_sync(10)
    got = rows(
        tmp_path / "gateway.db",
        "SELECT ConversationId, COUNT(*) FROM conversation_details GROUP BY ConversationId",
    )
    assert got == [("known", 6), ("orphan", 6)]
    assert writer.failed == 0 and writer.retried_batches >= 1


def _metric(gw: GatewayProcess, name: str) -> float:
    status, _, body = gw.get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_a_gateway_killed_with_sigkill_keeps_every_committed_turn(tmp_path: Path) -> None:
    import signal
    import time

    gw = GatewayProcess(write_config(tmp_path), tmp_path / "gateway.log")
    calls = [conversation_id() for _ in range(5)]
    try:
        with Client(gw.port) as c:
            for call in calls:
                base = {"InstanceId": "demo", "ConversationId": call}
                assert (
                    c.call({"Action": "BeginDialogue", "CallingNumber": "1", **base}).status == 200
                )
                for _ in range(20):
                    r = c.call({"Action": "Dialogue", "Utterance": "查询余额", **base})
                    assert r.status == 200
        # 5 x (ConversationBegun + greeting round + 20 rounds) committed, per /metrics.
        deadline = time.monotonic() + 10
        while _metric(gw, "ivrgw_store_written_total") < 5 * 22:
            assert time.monotonic() < deadline, "the writer did not commit the turns"
            time.sleep(0.05)
        assert _metric(gw, "ivrgw_records_dropped_total") == 0
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(10)
    finally:
        gw.stop()
    db = sqlite3.connect(tmp_path / "var" / "gateway.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(
            db.execute(
                "SELECT ConversationId, COUNT(*) FROM conversation_details GROUP BY ConversationId"
            ).fetchall()
        )
    finally:
        db.close()
    assert counts == {call: 41 for call in calls}  # greeting + 20 x (customer, chatbot)

"""Calls over /ws against a real gateway: whole calls, many on one socket, order,
resume after a drop, the grace period, and shutdown."""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from websockets.sync.client import connect

from tests.adapters.websocket.conftest import (
    GRACE,
    RawClient,
    metrics,
    open_ws,
    prepare,
    recv,
    send,
    wait_for_metric,
)
from tests.api.test_monitor import signed_url
from tests.conftest import RO_KEY_ID, RO_SECRET, GatewayProcess

WELCOME = "Welcome to Demo Bank"
CARDS = "Card services"
MAIN_MENU = "Main menu"


def call_id() -> str:
    return f"ws-{uuid.uuid4().hex[:12]}"


def test_websocket_a_whole_call_message_by_message(gw: GatewayProcess) -> None:
    c = call_id()
    with open_ws(gw) as ws:
        assert ws.subprotocol == "ivrgw.v1"
        send(ws, type="start", id=1, call_id=c, calling="13800000000", context={"balance": 42})
        greeting = recv(ws)
        assert greeting["type"] == "action" and greeting["call_id"] == c and greeting["id"] == 1
        assert greeting["action"] == "Broadcast" and WELCOME in greeting["text"]
        assert greeting["interruptible"] is True and greeting["action_params"] == {}
        assert greeting["input"] == {"wait_ms": 10_000, "max_digits": 32, "terminator": "#"}
        send(ws, type="digits", id=2, call_id=c, digits="1#")
        assert "42" in recv(ws)["text"]
        # A non-final utterance runs no turn and gets no answer.
        send(ws, type="utterance", id=3, call_id=c, text="查", final=False)
        send(ws, type="utterance", id=4, call_id=c, text="查询余额", confidence=0.9)
        answer = recv(ws)
        assert answer["id"] == 4 and "42" in answer["text"]
        send(ws, type="ping", id="p")
        assert recv(ws) == {"type": "pong", "id": "p"}
        send(ws, type="utterance", id=5, call_id=c, text="转人工")
        transfer = recv(ws)
        assert transfer["action"] == "TransferToAgent" and transfer["input"] is None
        assert transfer["action_params"] == {"skillGroupId": "complaints"}
        send(ws, type="end", id=6, call_id=c, cause="NORMAL_CLEARING")
        assert recv(ws) == {"type": "ended", "call_id": c, "id": 6}
        send(ws, type="no_input", id=7, call_id=c)
        assert recv(ws)["code"] == "UnknownCall"
    m = metrics(gw)
    key = 'ivrgw_turn_duration_seconds_count{front="websocket",operation="CollectedNumber",outcome="ok"}'
    assert m[key] >= 1


def test_websocket_silence_up_to_the_final_hangup(gw: GatewayProcess) -> None:
    c = call_id()
    with open_ws(gw) as ws:
        send(ws, type="start", id=0, call_id=c)
        recv(ws)
        for n in (1, 2, 3):
            send(ws, type="no_input", id=n, call_id=c)
        actions = [recv(ws)["action"] for _ in range(3)]
        assert actions == ["Broadcast", "Broadcast", "HangUp"]
        send(ws, type="end", id=4, call_id=c)
        assert recv(ws)["type"] == "ended"


def test_websocket_an_unknown_instance_gets_an_apology_and_a_hangup(gw: GatewayProcess) -> None:
    c = call_id()
    with open_ws(gw) as ws:
        send(ws, type="start", id=1, call_id=c, instance_id="no-such-instance")
        reply = recv(ws)
        assert reply["action"] == "HangUp" and reply["text"] and reply["input"] is None
        send(ws, type="end", id=2, call_id=c)
        assert recv(ws) == {"type": "ended", "call_id": c, "id": 2}


def test_websocket_a_thousand_calls_on_one_socket(gw: GatewayProcess) -> None:
    n = 1000
    calls = [f"k{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
    with open_ws(gw) as ws:
        for i, c in enumerate(calls):
            send(ws, type="start", id=f"s{i}", call_id=c, context={"balance": str(i)})
        greetings = [recv(ws) for _ in range(n)]
        assert {(g["call_id"], g["id"]) for g in greetings} == {
            (c, f"s{i}") for i, c in enumerate(calls)
        }
        assert all(WELCOME in g["text"] for g in greetings)
        for i, c in enumerate(calls):
            send(ws, type="utterance", id=f"u{i}", call_id=c, text="查询余额")
        answers = {a["call_id"]: a for a in (recv(ws) for _ in range(n))}
        for i, c in enumerate(calls):
            # Each call's answer carries its own balance: the frames are not crossed.
            assert answers[c]["id"] == f"u{i}"
            assert f"余额为{i}元" in answers[c]["text"]
        for i, c in enumerate(calls):
            send(ws, type="end", id=i, call_id=c)
        ended = [recv(ws) for _ in range(n)]
        assert {e["call_id"] for e in ended if e["type"] == "ended"} == set(calls)
    assert metrics(gw)['ivrgw_websocket_calls{state="attached"}'] == 0


def test_websocket_per_call_order_with_a_slow_bot(gw: GatewayProcess) -> None:
    """Every turn asks a bot that answers after a random delay: each call's answers
    still come back in the order its messages were sent, while calls interleave."""
    calls = [call_id() for _ in range(20)]
    turns = 5
    with open_ws(gw) as ws:
        for c in calls:
            send(ws, type="start", id=0, call_id=c, instance_id="echo")
        for k in range(1, turns + 1):
            for c in calls:
                send(ws, type="utterance", id=k, call_id=c, text=f"u{k}")
        seen: dict[str, list[Any]] = defaultdict(list)
        order: list[str] = []
        for _ in range(len(calls) * (turns + 1)):
            frame = recv(ws)
            assert frame["type"] == "action", frame
            seen[frame["call_id"]].append((frame["id"], frame["text"]))
            order.append(frame["call_id"])
        for c in calls:
            assert [i for i, _ in seen[c]] == list(range(turns + 1))
            assert [t for _, t in seen[c][1:]] == [f"echo u{k}" for k in range(1, turns + 1)]
        for c in calls:
            send(ws, type="end", id=99, call_id=c)
        assert all(recv(ws)["type"] == "ended" for _ in calls)


def test_websocket_resume_after_an_abrupt_drop(gw: GatewayProcess) -> None:
    c = call_id()
    raw = RawClient(gw)
    raw.send(type="start", id=1, call_id=c)
    raw.send(type="digits", id=2, call_id=c, digits="2")
    dropped = metrics(gw).get('ivrgw_websocket_disconnects_total{reason="dropped"}', 0)
    frames = raw.take(2)
    assert CARDS in frames[1]["text"]
    raw.abort()
    assert (
        wait_for_metric(gw, 'ivrgw_websocket_disconnects_total{reason="dropped"}', dropped)
        > dropped
    )
    with open_ws(gw) as ws:
        send(ws, type="resume", id="r", call_ids=[c, "no-such-call"])
        resumed, unknown = recv(ws), recv(ws)
        assert resumed["call_id"] == c and resumed["id"] == "r" and resumed["resumed"] is True
        assert resumed["text"] == frames[1]["text"]
        assert unknown["type"] == "error" and unknown["code"] == "UnknownCall"
        assert unknown["call_id"] == "no-such-call" and unknown["id"] == "r"
        # The call goes on where it was: in the cards menu, 9 is the main menu.
        send(ws, type="digits", id=3, call_id=c, digits="9")
        assert MAIN_MENU in recv(ws)["text"]
        # A second socket takes the call over; the first no longer owns it.
        with open_ws(gw) as other:
            send(other, type="resume", id="r2", call_ids=[c])
            assert MAIN_MENU in recv(other)["text"]
            send(ws, type="digits", id=4, call_id=c, digits="1")
            assert recv(ws)["code"] == "UnknownCall"
            send(other, type="end", id=5, call_id=c)
            assert recv(other)["type"] == "ended"


def test_websocket_grace_expiry_ends_the_call(gw: GatewayProcess) -> None:
    c = call_id()
    end_key = (
        'ivrgw_turn_duration_seconds_count{front="websocket",operation="EndDialogue",outcome="ok"}'
    )
    before = metrics(gw)
    with open_ws(gw) as ws:
        send(ws, type="start", id=1, call_id=c)
        recv(ws)
    expiries = "ivrgw_websocket_grace_expiries_total"
    assert metrics(gw)['ivrgw_websocket_calls{state="detached"}'] >= 1
    assert wait_for_metric(gw, expiries, before[expiries], timeout=GRACE + 10) > before[expiries]
    assert metrics(gw)[end_key] > before.get(end_key, 0)
    assert f'"call":"{c}"' in gw.logs().split("ended after its grace period")[-1].split("\n")[0]
    with open_ws(gw) as ws:
        send(ws, type="resume", id=2, call_ids=[c])
        assert recv(ws)["code"] == "UnknownCall"


def test_websocket_shutdown_ends_live_calls(tmp_path: Path) -> None:
    g = GatewayProcess(prepare(tmp_path, grace_seconds=600), tmp_path / "gateway.log")
    try:
        with open_ws(g) as ws:
            for i in range(3):
                send(ws, type="start", id=i, call_id=f"down-{i}")
            for _ in range(3):
                recv(ws)
            g.proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal once it has shut down cleanly.
            g.proc.wait(timeout=20)
    finally:
        g.stop()
    logs = g.logs()
    assert "Application shutdown complete" in logs
    assert "websocket calls ended at shutdown" in logs and '"count":3' in logs


def test_websocket_connections_gauge_counts_open_sockets(gw: GatewayProcess) -> None:
    base = metrics(gw)["ivrgw_websocket_connections"]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(open_ws(gw)) for _ in range(3)]
        for ws in sockets:
            send(ws, type="ping")
            recv(ws)
        assert metrics(gw)["ivrgw_websocket_connections"] == base + 3


def test_websocket_turns_reach_the_live_monitor(gw: GatewayProcess) -> None:
    c = call_id()
    monitor_url = signed_url(gw.port, RO_KEY_ID, RO_SECRET, instance="demo")
    with connect(monitor_url) as monitor, open_ws(gw) as ws:
        assert recv(monitor)["type"] == "hello"
        send(ws, type="start", id=1, call_id=c, calling="13800000000")
        recv(ws)
        turn = recv(monitor)
        assert (turn["front"], turn["conversation"], turn["operation"]) == (
            "websocket",
            c,
            "BeginDialogue",
        )
        assert "13800000000" not in orjson.dumps(turn).decode()
        send(ws, type="end", id=2, call_id=c)
        recv(ws)

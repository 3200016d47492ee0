"""What /ws refuses, against a real gateway: bad frames, binary frames, floods,
clients that stop reading, and upgrades without valid credentials."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from gateway.net.signing import handshake_signature
from tests.adapters.websocket.conftest import (
    MAX_FRAME,
    SEND_QUEUE,
    SEND_TIMEOUT,
    RawClient,
    metrics,
    open_ws,
    prepare,
    recv,
    send,
    url,
)
from tests.conftest import KEY_ID, RO_KEY_ID, RO_SECRET, SECRET, GatewayProcess, utc_now

SLOW = 'ivrgw_websocket_disconnects_total{reason="slow_reader"}'


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose sockets may send 20 frames/s, in bursts of 10."""
    d = tmp_path_factory.mktemp("ws-tight")
    g = GatewayProcess(prepare(d, rate=20, burst=10), d / "gateway.log")
    yield g
    g.stop()


def _start(ws: Any, call: str) -> None:
    send(ws, type="start", id="s", call_id=call)
    assert recv(ws)["type"] == "action"


BAD = [
    ("{not json", "InvalidJson", None),
    ('["start"]', "InvalidJson", None),
    ('{"id": 1, "type": "dance"}', "UnknownType", 1),
    ('{"id": 2}', "UnknownType", 2),
    ('{"id": 3, "type": "digits", "digits": "1"}', "MissingCallId", 3),
    ('{"type": "digits", "call_id": "live", "digits": "1"}', "MissingId", None),
    ('{"id": 4, "type": "digits", "call_id": "nobody-has-this", "digits": "1"}', "UnknownCall", 4),
    (
        '{"id": 5, "type": "utterance", "call_id": "nobody", "text": "x", "final": false}',
        "UnknownCall",
        5,
    ),
    ('{"id": 6, "type": "start", "call_id": "live"}', "DuplicateCall", 6),
    ('{"id": 7, "type": "digits", "call_id": "live", "digits": 1}', "InvalidParameter", 7),
    ('{"id": 8, "type": "utterance", "call_id": "live", "text": ["x"]}', "InvalidParameter", 8),
    ('{"id": 9, "type": "start", "call_id": "x", "context": "a=1"}', "InvalidParameter", 9),
    ('{"id": 10, "type": "resume", "call_ids": "live"}', "InvalidParameter", 10),
    (
        '{"id": 12, "type": "utterance", "call_id": "live", "text": "' + "x" * MAX_FRAME + '"}',
        "FrameTooLarge",
        None,
    ),
    # Under the cap in characters, over it in UTF-8 bytes.
    (
        '{"id": 13, "type": "utterance", "call_id": "live", "text": "'
        + "中" * (MAX_FRAME // 3)
        + '"}',
        "FrameTooLarge",
        None,
    ),
]


def test_websocket_bad_frames_get_error_frames_and_the_socket_stays_open(
    gw: GatewayProcess,
) -> None:
    live = f"live-{uuid.uuid4().hex[:8]}"
    with open_ws(gw) as ws:
        _start(ws, live)
        send(ws, type="start", id="x", call_id="x")  # for the DuplicateCall cases
        recv(ws)
        for frame, code, mid in BAD:
            ws.send(frame.replace('"live"', f'"{live}"'))
            error = recv(ws)
            assert (error["type"], error["code"], error["id"]) == ("error", code, mid), frame
            assert error["message"]
        # Still open, and the call still works.
        send(ws, type="digits", id=20, call_id=live, digits="2")
        assert "Card services" in recv(ws)["text"]
    codes = metrics(gw)
    assert codes['ivrgw_websocket_error_frames_total{code="FrameTooLarge"}'] >= 2


def test_websocket_binary_frame_closes_with_1003(gw: GatewayProcess) -> None:
    with open_ws(gw) as ws:
        send(ws, type="ping", id=1)
        ws.send(b"\x00\x01")
        assert recv(ws) == {"type": "pong", "id": 1}
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1003


def test_websocket_flood_is_rate_limited_on_its_socket_only(tight: GatewayProcess) -> None:
    with open_ws(tight) as flood, open_ws(tight) as calm:
        for i in range(60):
            send(flood, type="ping", id=i)
        frames = [recv(flood) for _ in range(60)]
        limited = [f for f in frames if f["type"] == "error"]
        # The burst of 10 (and a token or two refilled meanwhile) get through.
        assert 40 <= len(limited) <= 50
        assert {f["code"] for f in limited} == {"RateLimited"}
        assert all(f["id"] is not None for f in limited)
        for i in range(5):
            send(calm, type="ping", id=i)
            assert recv(calm) == {"type": "pong", "id": i}
        time.sleep(0.2)  # 20 frames/s: four tokens back
        send(flood, type="ping", id="again")
        assert recv(flood) == {"type": "pong", "id": "again"}
    assert metrics(tight)["ivrgw_websocket_rate_limited_frames_total"] >= 40


def _flood_until_closed(gw: GatewayProcess, raw: RawClient, calls: list[str]) -> int:
    """Ask for the long prompt again and again without reading; the number sent when
    the gateway gave up on us. Bounded in messages and time."""
    kicked = metrics(gw).get(SLOW, 0)
    deadline = time.monotonic() + 20
    sent = 0
    peak = 0.0
    while sent < 20_000 and time.monotonic() < deadline:
        for _ in range(20):
            raw.send_nowait(
                type="utterance", id=sent, call_id=calls[sent % len(calls)], text="再说一遍"
            )
            sent += 1
        m = metrics(gw)
        peak = max(peak, m["ivrgw_websocket_queued_frames"])
        if m.get(SLOW, 0) > kicked:
            break
        time.sleep(0.01)
    # The queue never held more than the bound (twice send_queue at the most).
    assert peak <= 2 * SEND_QUEUE
    assert metrics(gw).get(SLOW, 0) > kicked, f"not closed after {sent} messages"
    return sent


def _raw_with_calls(gw: GatewayProcess, n: int = 4) -> tuple[RawClient, list[str]]:
    raw = RawClient(gw, rcvbuf=4096)
    calls = [f"slow-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    for c in calls:
        raw.send(type="start", id=c, call_id=c, instance_id="long")
    raw.take(n)
    return raw, calls


def test_websocket_slow_reader_is_closed_with_1008(gw: GatewayProcess) -> None:
    raw, calls = _raw_with_calls(gw)
    try:
        _flood_until_closed(gw, raw, calls)
        # Reading again: what was already on its way, then the close frame.
        frames = raw.read_until_closed()
        assert raw.proto.close_rcvd is not None
        assert raw.proto.close_rcvd.code == 1008
        assert "not reading" in raw.proto.close_rcvd.reason
        assert frames and all(f["type"] == "action" for f in frames)
    finally:
        raw.close()
    # The calls were kept for a resume, like any dropped socket's.
    with open_ws(gw) as ws:
        send(ws, type="resume", id="r", call_ids=calls)
        assert all(recv(ws).get("resumed") for _ in calls)
        for c in calls:
            send(ws, type="end", id="e", call_id=c)
        assert all(recv(ws)["type"] == "ended" for _ in calls)


def test_websocket_a_client_that_never_reads_is_dropped(gw: GatewayProcess) -> None:
    raw, calls = _raw_with_calls(gw)
    try:
        _flood_until_closed(gw, raw, calls)
        before = metrics(gw)["ivrgw_websocket_connections"]
        assert before >= 1
        # It takes not even the close frame: after send_timeout the connection is aborted.
        deadline = time.monotonic() + SEND_TIMEOUT + 10
        while metrics(gw)["ivrgw_websocket_connections"] >= before:
            assert time.monotonic() < deadline, "the connection was never dropped"
            time.sleep(0.05)
        assert metrics(gw)["ivrgw_websocket_queued_frames"] == 0
        with pytest.raises((ConnectionResetError, AssertionError)):
            raw.read_until_closed()
            # A clean close would have carried a close frame; an abort carries none.
            assert raw.proto.close_rcvd is not None
    finally:
        raw.close()


# -- the upgrade -------------------------------------------------------------------


def signed(gw: GatewayProcess, key_id: str, secret: str) -> str:
    params = {"AccessKeyId": key_id, "Timestamp": utc_now(), "SignatureNonce": uuid.uuid4().hex}
    params["Signature"] = handshake_signature(secret, "/ws", params)
    return f"{url(gw)}?{urlencode(params)}"


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [
        ("nothing", 401, "IncompleteSignature"),
        ("wrong-token", 401, "InvalidToken"),
        ("bad-signature", 401, "SignatureDoesNotMatch"),
        ("read-only-key", 403, "Forbidden.RAM"),
        ("other-subprotocol", 400, "UnsupportedSubprotocol"),
    ],
)
def test_websocket_refuses_upgrades_before_accepting(
    gw: GatewayProcess, how: str, status: int, code: str
) -> None:
    target, headers, protocols = url(gw), {}, [Subprotocol("ivrgw.v1")]
    if how == "wrong-token":
        headers["Authorization"] = "Bearer not-the-token-0123456789"
    elif how == "bad-signature":
        target = signed(gw, KEY_ID, "wrong-secret")
    elif how == "read-only-key":
        target = signed(gw, RO_KEY_ID, RO_SECRET)
    elif how == "other-subprotocol":
        headers["Authorization"] = "Bearer ws-token-0123456789abcdef"
        protocols = [Subprotocol("ivrgw.v2")]
    with (
        pytest.raises(InvalidStatus) as caught,
        connect(target, additional_headers=headers, subprotocols=protocols),
    ):
        pass
    response = caught.value.response
    assert response.status_code == status
    assert orjson.loads(response.body or b"{}")["Code"] == code


def test_websocket_accepts_a_signed_query_and_no_subprotocol(gw: GatewayProcess) -> None:
    with connect(signed(gw, KEY_ID, SECRET)) as ws:
        assert ws.subprotocol is None
        send(ws, type="ping", id=1)
        assert recv(ws) == {"type": "pong", "id": 1}


def test_websocket_frames_over_uvicorns_cap_close_with_1009(gw: GatewayProcess) -> None:
    with open_ws(gw, max_size=None) as ws:
        ws.send("x" * (1 << 20 | 1))
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv(timeout=5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009

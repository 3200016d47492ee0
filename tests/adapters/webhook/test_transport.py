"""The generic JSON webhook against a real gateway process on loopback."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import GatewayProcess, conversation_id, write_config

TOKEN = "webhook-token-0123456789"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    d = tmp_path_factory.mktemp("hook")
    config = write_config(
        d,
        extra=f"""
[adapters.webhook]
enabled = true
tokens = ["{TOKEN}"]
max_body_bytes = 4096
""",
    )
    g = GatewayProcess(config, d / "gateway.log")
    yield g
    g.stop()


def post(
    gw: GatewayProcess,
    call: str,
    body: object,
    token: str | None = TOKEN,
    method: str = "POST",
    raw: bytes | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(
            method,
            f"/v1/calls/{call}/events",
            raw if raw is not None else orjson.dumps(body),
            headers,
        )
        r = conn.getresponse()
        return r.status, orjson.loads(r.read())
    finally:
        conn.close()


def test_a_whole_call_over_the_json_webhook(gw: GatewayProcess) -> None:
    call = conversation_id()
    start = {
        "type": "start",
        "instance_id": "demo",
        "calling": "13800000000",
        "seq": 0,
        "context": {"name": "Li", "balance": 42},
    }
    status, greeting = post(gw, call, start)
    assert status == 200 and greeting["action"] == "Broadcast"
    assert greeting["input"] == {"wait_ms": 10_000, "max_digits": 32, "terminator": "#"}
    status, answer = post(
        gw,
        call,
        {"type": "speech", "text": "查询余额", "confidence": 0.9, "instance_id": "demo", "seq": 1},
    )
    assert status == 200 and "42" in answer["text"]
    for seq in (2, 3):
        assert (
            post(gw, call, {"type": "no_input", "instance_id": "demo", "seq": seq})[1]["action"]
            == "Broadcast"
        )
    _, final = post(gw, call, {"type": "no_input", "instance_id": "demo", "seq": 4})
    assert final["action"] == "HangUp" and final["input"] is None
    status, end = post(gw, call, {"type": "end", "instance_id": "demo", "seq": 5})
    assert status == 200 and end == {"call_id": call, "seq": 5, "ended": True}
    _, _, metrics = gw.get("/metrics")
    assert 'front="webhook"' in metrics.decode()


def test_a_repeated_event_gets_the_first_answer_and_runs_once(gw: GatewayProcess) -> None:
    call = conversation_id()
    post(gw, call, {"type": "start", "instance_id": "demo", "calling": "1", "seq": 0})
    silence = {"type": "no_input", "instance_id": "demo", "seq": 1}
    first = post(gw, call, silence)
    assert post(gw, call, silence) == first
    assert post(gw, call, silence) == first
    # Only one silence counted: two more reach the threshold of 3.
    assert post(gw, call, {**silence, "seq": 2})[1]["action"] == "Broadcast"
    assert post(gw, call, {**silence, "seq": 3})[1]["action"] == "HangUp"


def test_digits_and_a_transfer(gw: GatewayProcess) -> None:
    call = conversation_id()
    post(gw, call, {"type": "start", "instance_id": "demo", "calling": "1"})
    status, reply = post(gw, call, {"type": "speech", "instance_id": "demo", "text": "转人工"})
    assert status == 200 and reply["action"] == "TransferToAgent"
    assert reply["action_params"] == {"skillGroupId": "complaints"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "InvalidParameter"),
        (b"[1]", "InvalidParameter"),
        (b'{"type": "dance", "instance_id": "demo"}', "InvalidParameter"),
        (b'{"type": "start", "calling": "1"}', "MissingInstanceId"),
        (b'{"type": "start", "instance_id": "demo"}', "MissingCalling"),
        (b'{"type": "digits", "instance_id": "demo", "digits": "12x"}', "InvalidParameter"),
        (b'{"type": "speech", "instance_id": "demo", "confidence": 7}', "InvalidParameter"),
        (b'{"type": "no_input", "instance_id": "demo", "seq": -1}', "InvalidParameter"),
    ],
)
def test_bad_events_get_a_documented_400(gw: GatewayProcess, body: bytes, code: str) -> None:
    status, error = post(gw, conversation_id(), None, raw=body)
    assert status == 400 and error["code"] == code and error["message"]


def test_auth_method_and_size(gw: GatewayProcess) -> None:
    call = conversation_id()
    start = {"type": "start", "instance_id": "demo", "calling": "1"}
    assert post(gw, call, start, token=None)[0] == 401
    assert post(gw, call, start, token="wrong-token-0123456789")[0] == 401
    assert post(gw, call, start, method="PUT")[0] == 405
    status, error = post(gw, call, None, raw=b'{"type": "start", "x": "' + b"y" * 5000 + b'"}')
    assert status == 413 and error["code"] == "PayloadTooLarge"


def test_unknown_instance_and_unknown_call_still_get_actions(gw: GatewayProcess) -> None:
    status, reply = post(
        gw, conversation_id(), {"type": "start", "instance_id": "nope", "calling": "1"}
    )
    assert status == 200 and reply["action"] == "HangUp" and reply["text"]
    status, reply = post(
        gw, conversation_id(), {"type": "digits", "instance_id": "demo", "digits": "1"}
    )
    # A call the gateway does not know (restarted, expired): the instance's fallback.
    assert status == 200 and reply["action"] == "TransferToAgent" and reply["text"]

"""`/ws/monitor` against a real gateway: auth before the upgrade, filtering, no secrets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gateway.net.signing import handshake_signature
from tests.conftest import (
    KEY_ID,
    RO_KEY_ID,
    RO_SECRET,
    SECRET,
    Client,
    GatewayProcess,
    utc_now,
    write_config,
)

PATH = "/ws/monitor"


def signed_url(port: int, key_id: str, secret: str, **extra: str) -> str:
    params = {
        "AccessKeyId": key_id,
        "Timestamp": utc_now(),
        "SignatureNonce": uuid.uuid4().hex,
        **extra,
    }
    params["Signature"] = handshake_signature(secret, PATH, params)
    return f"ws://127.0.0.1:{port}{PATH}?{urlencode(params)}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    d = tmp_path_factory.mktemp("monitor")
    extra = "\n".join(
        (
            "[[access_keys]]",
            'id = "other-key"',
            'secret = "other-secret"',
            'policy = "full"',
            'user = "ops"',
        )
    )
    process = GatewayProcess(write_config(d, extra=extra), d / "gateway.log")
    yield process
    process.stop()


def frames(ws: ClientConnection, n: int) -> list[dict[str, object]]:
    return [orjson.loads(ws.recv(timeout=5)) for _ in range(n)]


def begin(port: int, conversation: str, instance: str = "demo") -> None:
    with Client(port) as c:
        r = c.call(
            {
                "Action": "BeginDialogue",
                "InstanceId": instance,
                "ConversationId": conversation,
                "CallingNumber": "13800000000",
                "CalledNumber": "95555",
            }
        )
        assert r.status in (200, 404), r.body


def test_monitor_streams_turns_with_a_read_only_key(gw: GatewayProcess) -> None:
    url = signed_url(gw.port, RO_KEY_ID, RO_SECRET)
    with connect(url, subprotocols=["ivrgw.monitor.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ivrgw.monitor.v1"
        hello = frames(ws, 1)[0]
        assert hello == {"type": "hello", "instances": None, "access_key": RO_KEY_ID}
        conversation = f"mon-{uuid.uuid4().hex[:8]}"
        begin(gw.port, conversation)
        turn = frames(ws, 1)[0]
        assert turn["type"] == "turn"
        assert turn["front"] == "rpc"
        assert turn["instance"] == "demo"
        assert turn["conversation"] == conversation
        assert turn["operation"] == "BeginDialogue"
        assert turn["action"] == "Broadcast"
        assert turn["outcome"] == "ok"
        assert isinstance(turn["latency_ms"], float) and turn["latency_ms"] > 0
        # Nothing the caller said, and no key material, is in the frame.
        text = orjson.dumps(turn).decode()
        for secret in (SECRET, RO_SECRET, "13800000000", "95555"):
            assert secret not in text
        ws.send("ping")
        assert frames(ws, 1)[0] == {"type": "pong"}


def test_monitor_filters_by_instance(gw: GatewayProcess) -> None:
    only_other = signed_url(gw.port, KEY_ID, SECRET, instance="no-such")
    only_demo = signed_url(gw.port, RO_KEY_ID, RO_SECRET, instance="demo")
    with connect(only_other) as other, connect(only_demo) as demo:
        frames(other, 1), frames(demo, 1)
        begin(gw.port, f"mon-{uuid.uuid4().hex[:8]}")
        assert frames(demo, 1)[0]["instance"] == "demo"
        # The unknown instance's turn is refused (404) and published as an error.
        begin(gw.port, "mon-x", instance="no-such")
        turn = frames(other, 1)[0]
        assert (turn["instance"], turn["outcome"], turn["action"]) == ("no-such", "error", None)
        with pytest.raises(TimeoutError):
            demo.recv(timeout=0.3)


@pytest.mark.parametrize(
    "how",
    ["nothing", "bearer", "bad-signature", "unknown-key", "replayed"],
)
def test_monitor_refuses_unauthenticated_upgrades_with_401(gw: GatewayProcess, how: str) -> None:
    url = f"ws://127.0.0.1:{gw.port}{PATH}"
    headers: dict[str, str] = {}
    if how == "bearer":
        headers["Authorization"] = "Bearer anything"
    elif how == "bad-signature":
        url = signed_url(gw.port, RO_KEY_ID, "wrong-secret")
    elif how == "unknown-key":
        url = signed_url(gw.port, "nobody", RO_SECRET)
    elif how == "replayed":
        url = signed_url(gw.port, RO_KEY_ID, RO_SECRET)
        with connect(url) as ws:
            frames(ws, 1)
    with pytest.raises(InvalidStatus) as caught, connect(url, additional_headers=headers):
        pass
    response = caught.value.response
    assert response.status_code == 401
    body = orjson.loads(response.body or b"{}")
    assert body["Code"] in {
        "IncompleteSignature",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "SignatureNonceUsed",
    }
    assert "secret" not in (response.body or b"").decode()


def test_unknown_websocket_path_is_404(gw: GatewayProcess) -> None:
    with pytest.raises(InvalidStatus) as caught, connect(f"ws://127.0.0.1:{gw.port}/ws/nope"):
        pass
    assert caught.value.response.status_code == 404


def test_monitor_delivers_a_burst_in_order(gw: GatewayProcess) -> None:
    url = signed_url(gw.port, RO_KEY_ID, RO_SECRET)
    with connect(url) as ws:
        frames(ws, 1)
        ids = [f"mon-burst-{uuid.uuid4().hex[:6]}-{i}" for i in range(5)]
        for conversation in ids:
            begin(gw.port, conversation)
        assert [f["conversation"] for f in frames(ws, 5)] == ids

"""Remote mode: gateway A sends every operation to gateway B (local mode), both
real processes on loopback; and A's EndDialogue outbox against a remote that
is down, across a restart of A."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from tests.conftest import (
    DEMO,
    KEY_ID,
    SECRET,
    Client,
    GatewayProcess,
    conversation_id,
    free_port,
    without_fallback,
    write_config,
)
from tests.loopback import LoopbackServer, Reply, Request

FALLBACK = "Sorry, the remote is away."


def remote_instance(directory: Path, instance_id: str, remote: str, remote_id: str) -> None:
    text = without_fallback(DEMO.read_text(encoding="utf-8")).replace(
        'InstanceId = "demo"', f'InstanceId = "{instance_id}"'
    )
    text += f"""
[FallbackConfig]
Prompt = "{FALLBACK}"
TurnBudget = 800

[remote]
name = "{remote}"
instance = "{remote_id}"
"""
    (directory / "instances" / f"{instance_id}.toml").write_text(text, encoding="utf-8")


def remotes_config(port: int, fake_port: int) -> str:
    return f"""
[outbox]
retry_base_ms = 100
retry_max_seconds = 1

[[remotes]]
name = "b"
url = "http://127.0.0.1:{port}/"
signature = "rpc-v1"
access_key_id = "{KEY_ID}"
access_key_secret = "{SECRET}"

[[remotes]]
name = "b3"
url = "http://127.0.0.1:{port}/"
signature = "acs3"
access_key_id = "{KEY_ID}"
access_key_secret = "{SECRET}"

[[remotes]]
name = "down"
url = "http://127.0.0.1:{free_port()}/"
signature = "rpc-v1"
access_key_id = "{KEY_ID}"
access_key_secret = "{SECRET}"

[[remotes]]
name = "fake"
url = "http://127.0.0.1:{fake_port}/"
signature = "none"
"""


class FakeRemote:
    """A VoiceNavigator endpoint whose EndDialogue fails while `down`."""

    def __init__(self) -> None:
        self.down = True
        self.ended: list[str] = []

    def __call__(self, request: Request) -> Reply:
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.target).query).items()}
        if q["Action"] == "EndDialogue":
            if self.down:
                return Reply.json({"Code": "ServiceUnavailable", "Message": "down"}, 503)
            self.ended.append(q["ConversationId"])
            return Reply.json({"RequestId": "r"})
        return Reply.json(
            {
                "RequestId": "r",
                "TextResponse": "fake says hi",
                "Interruptible": True,
                "Action": "Broadcast",
                "ActionParams": "{}",
            }
        )


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeRemote, LoopbackServer]]:
    f = FakeRemote()
    with LoopbackServer(f) as server:
        yield f, server


@pytest.fixture(scope="module")
def b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    d = tmp_path_factory.mktemp("b")
    g = GatewayProcess(write_config(d), d / "gateway.log")
    yield g
    g.stop()


def start_a(d: Path, b_port: int, fake_port: int) -> GatewayProcess:
    config = write_config(d, extra=remotes_config(b_port, fake_port))
    remote_instance(d, "front", "b", "demo")
    remote_instance(d, "front3", "b3", "demo")
    remote_instance(d, "away", "down", "demo")
    remote_instance(d, "faked", "fake", "demo")
    return GatewayProcess(config, d / "gateway.log")


@pytest.fixture(scope="module")
def a_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("a")


@pytest.fixture(scope="module")
def a(
    a_dir: Path, b: GatewayProcess, fake: tuple[FakeRemote, LoopbackServer]
) -> Iterator[GatewayProcess]:
    g = start_a(a_dir, b.port, fake[1].port)
    yield g
    g.stop()


def call(c: Client, action: str, instance: str, conv: str, **params: str) -> dict[str, object]:
    r = c.call({"Action": action, "InstanceId": instance, "ConversationId": conv, **params})
    assert r.status == 200, r.json
    return r.json  # type: ignore[no-any-return]


def wait_ended_at_b(b: GatewayProcess, conv: str) -> None:
    with Client(b.port) as cb:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = cb.call({"Action": "SilenceTimeout", "InstanceId": "demo", "ConversationId": conv})
            if r.status == 404:
                assert r.json["Code"] == "InvalidConversationId.NotFound"
                return
            time.sleep(0.1)
    raise AssertionError("EndDialogue never reached the remote")


@pytest.mark.parametrize("instance", ["front", "front3"])  # RPC v1, then ACS3
def test_a_whole_conversation_through_a_remote_gateway(
    a: GatewayProcess, b: GatewayProcess, instance: str
) -> None:
    conv = conversation_id()
    with Client(a.port) as c, Client(b.port) as cb:
        greeting = call(
            c,
            "BeginDialogue",
            instance,
            conv,
            CallingNumber="13800000000",
            InitialContext='{"name": "Li", "balance": "42"}',
        )
        assert str(greeting["TextResponse"]).startswith("您好，欢迎致电演示银行")
        answer = call(c, "Dialogue", instance, conv, Utterance="查询余额")
        assert "42" in str(answer["TextResponse"]) and answer["Action"] == "Broadcast"
        menu = call(c, "CollectedNumber", instance, conv, Number="2")
        assert menu["Action"] == "Broadcast"
        for _ in range(2):
            assert call(c, "SilenceTimeout", instance, conv)["Action"] == "Broadcast"
        assert call(c, "SilenceTimeout", instance, conv)["Action"] == "HangUp"
        # The conversation lives at B, under B's instance id.
        r = cb.call(
            {
                "Action": "Dialogue",
                "InstanceId": "demo",
                "ConversationId": conv,
                "Utterance": "repeat that",
            }
        )
        assert r.status == 200
        end = c.call({"Action": "EndDialogue", "InstanceId": instance, "ConversationId": conv})
        assert end.status == 200 and set(end.json) == {"RequestId"}
    wait_ended_at_b(b, conv)


def test_the_remotes_client_errors_are_ours(a: GatewayProcess) -> None:
    with Client(a.port) as c:
        r = c.call(
            {
                "Action": "Dialogue",
                "InstanceId": "front",
                "ConversationId": "nope",
                "Utterance": "hi",
            }
        )
        assert r.status == 404 and r.json["Code"] == "InvalidConversationId.NotFound"
        conv = conversation_id()
        call(c, "BeginDialogue", "front", conv, CallingNumber="1")
        r = c.call(
            {
                "Action": "BeginDialogue",
                "InstanceId": "front",
                "ConversationId": conv,
                "CallingNumber": "1",
            }
        )
        assert r.status == 400 and r.json["Code"] == "InvalidConversationId.Duplicated"


def test_a_remote_that_is_down_gives_the_fallback(a: GatewayProcess) -> None:
    with Client(a.port) as c:
        reply = call(c, "BeginDialogue", "away", conversation_id(), CallingNumber="1")
    assert reply["TextResponse"] == FALLBACK and reply["Action"] == "TransferToAgent"


def test_end_dialogue_survives_a_down_remote_and_a_restart(
    a: GatewayProcess, a_dir: Path, b: GatewayProcess, fake: tuple[FakeRemote, LoopbackServer]
) -> None:
    remote, server = fake
    conv = conversation_id()
    with Client(a.port) as c:
        assert call(c, "BeginDialogue", "faked", conv, CallingNumber="1")["TextResponse"] == (
            "fake says hi"
        )
        r = c.call({"Action": "EndDialogue", "InstanceId": "faked", "ConversationId": conv})
        assert r.status == 200
    # Delivery is tried (and fails) while A runs.
    deadline = time.monotonic() + 10
    while not any("EndDialogue" in q.target for q in server.requests):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    a.stop()
    db = sqlite3.connect(a_dir / "var" / "outbox.db")
    rows = db.execute("SELECT payload FROM outbox").fetchall()
    db.close()
    assert [orjson.loads(p)["conversation"] for (p,) in rows] == [conv]
    remote.down = False
    again = start_a(a_dir, b.port, server.port)
    try:
        deadline = time.monotonic() + 10
        while conv not in remote.ended:
            assert time.monotonic() < deadline, "not delivered after the restart"
            time.sleep(0.05)
        _, _, metrics = again.get("/metrics")
        assert "ivrgw_outbox_delivered_total 1.0" in metrics.decode()
    finally:
        again.stop()

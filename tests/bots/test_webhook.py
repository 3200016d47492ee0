"""The webhook bot, through a real gateway process, against a real loopback bot
that verifies the signature and misbehaves on request (tests/loopback.py)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from gateway.net.signing import webhook_verify
from tests.conftest import (
    DEMO,
    RO_KEY_ID,
    RO_SECRET,
    Client,
    GatewayProcess,
    conversation_id,
    free_port,
    without_fallback,
    write_config,
)
from tests.loopback import LoopbackServer, Reply, Request

SECRET = "webhook-secret-0123456789"
BUDGET_MS = 500
FALLBACK = "Sorry, fallback."


class Bot:
    """The customer's bot: checks every signature, refuses replays, and
    misbehaves when the utterance asks it to."""

    def __init__(self) -> None:
        self.deliveries: set[str] = set()
        self.bad_signatures = 0

    def __call__(self, request: Request) -> Reply:
        if not webhook_verify(SECRET, request.headers, request.body, time.time()):
            self.bad_signatures += 1
            return Reply.json({"error": "bad signature"}, 401)
        delivery = request.headers["x-ivrgw-delivery"]
        if delivery in self.deliveries:
            return Reply.json({"error": "replayed"}, 409)
        self.deliveries.add(delivery)
        q = orjson.loads(request.body)
        said = q.get("utterance") or q.get("digits") or ""
        match said:
            case "slow":
                return Reply.json({"answer": "too late"}, delay=BUDGET_MS / 1000 + 1)
            case "slowish":
                return Reply.json({"answer": f"slowish {q['turn']}"}, delay=0.3)
            case "reset":
                return Reply.json({"answer": "x" * 100}, reset_after=40)
            case "500":
                return Reply.json({"error": "boom"}, 500)
            case "badjson":
                return Reply(200, b"{not json")
            case "shape":
                return Reply.json({"answer": 5})
            case "huge":
                return Reply(200, body_size=10 * 1_048_576)
            case "garbage":
                return Reply(raw=b"NOT HTTP AT ALL\r\n\r\n")
            case "closeafter":
                return Reply.json({"answer": "bye connection"}, close=True)
            case "chunked":
                return Reply.json({"answer": "in pieces"}, chunked=True)
            case "vip":
                return Reply.json(
                    {
                        "action": "TransferToAgent",
                        "action_params": {"skillGroupId": "vip"},
                        "text": "Connecting you.",
                        "interruptible": False,
                    }
                )
            case "huh":
                return Reply(204)
            case "1":
                return Reply.json(
                    {
                        "answer": "menu two",
                        "state": "m2",
                        "variables": {"picked": "1"},
                        "expects_input": True,
                    }
                )
            case _:
                return Reply.json(
                    {
                        "answer": f"echo {said} {q['variables'].get('picked', '')}".rstrip(),
                        "variables": {"last": said},
                    }
                )


def instance_file(directory: Path, instance_id: str, bot: str) -> None:
    text = without_fallback(DEMO.read_text(encoding="utf-8"))
    text = text.replace('InstanceId = "demo"', f'InstanceId = "{instance_id}"\nChatbot = "{bot}"')
    text += f"""
[FallbackConfig]
Prompt = "{FALLBACK}"
FinalAction = "TransferToAgent"
FinalActionParams = '{{"skillGroupId": "fallback"}}'
TurnBudget = {BUDGET_MS}
"""
    (directory / "instances" / f"{instance_id}.toml").write_text(text, encoding="utf-8")


def bots_config(bot_port: int, failures: int = 1000, reset_ms: int = 10_000) -> str:
    return f"""
[breaker]
failures = {failures}
reset_ms = {reset_ms}

[[bots]]
name = "shop"
kind = "webhook"
url = "http://127.0.0.1:{bot_port}/bot"
secret = "{SECRET}"

[[bots]]
name = "nowhere"
kind = "webhook"
url = "http://bot.invalid/bot"
secret = "{SECRET}"

[[bots]]
name = "refused"
kind = "webhook"
url = "http://127.0.0.1:{free_port()}/bot"
secret = "{SECRET}"
"""


def start_gateway(d: Path, bot_port: int, **kw: int) -> GatewayProcess:
    config = write_config(d, extra=bots_config(bot_port, **kw))
    for name in ("shop", "nowhere", "refused"):
        instance_file(d, name, name)
    return GatewayProcess(config, d / "gateway.log")


@pytest.fixture(scope="module")
def bot() -> Iterator[tuple[Bot, LoopbackServer]]:
    b = Bot()
    with LoopbackServer(b) as server:
        yield b, server


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, bot: tuple[Bot, LoopbackServer]
) -> Iterator[GatewayProcess]:
    g = start_gateway(tmp_path_factory.mktemp("gw"), bot[1].port)
    yield g
    g.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[Client]:
    with Client(gw.port) as c:
        yield c


def begin(client: Client, instance: str = "shop") -> str:
    conv = conversation_id()
    r = client.call(
        {
            "Action": "BeginDialogue",
            "InstanceId": instance,
            "ConversationId": conv,
            "CallingNumber": "13800000000",
        }
    )
    assert r.status == 200, r.json
    return conv


def say(client: Client, conv: str, text: str, instance: str = "shop") -> dict[str, object]:
    r = client.call(
        {"Action": "Dialogue", "InstanceId": instance, "ConversationId": conv, "Utterance": text}
    )
    assert r.status == 200, r.json
    return r.json  # type: ignore[no-any-return]


def test_webhook_answers_with_a_signed_request(
    client: Client, bot: tuple[Bot, LoopbackServer]
) -> None:
    conv = begin(client)
    reply = say(client, conv, "hello")
    assert str(reply["TextResponse"]).startswith("echo hello")
    assert reply["Action"] == "Broadcast"
    sent = bot[1].requests[-1]
    assert sent.method == "POST" and sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "conversation_id": conv,
        "instance_id": "shop",
        "event": "utterance",
        "utterance": "hello",
        "variables": {},
        "turn": 2,
        "state": "",
    }
    assert bot[0].bad_signatures == 0
    # Variables and state the bot returned come back on the next question.
    say(client, conv, "1")
    reply = say(client, conv, "again")
    assert str(reply["TextResponse"]).startswith("echo again 1")
    q = bot[1].requests[-1].json
    assert q["state"] == "m2" and q["variables"] == {"last": "hello", "picked": "1"}  # type: ignore[index]


def test_webhook_action_and_not_understood(client: Client) -> None:
    conv = begin(client)
    reply = say(client, conv, "vip")
    assert reply["Action"] == "TransferToAgent"
    assert orjson.loads(str(reply["ActionParams"])) == {"skillGroupId": "vip"}
    assert reply["TextResponse"] == "Connecting you." and reply["Interruptible"] is False
    reply = say(client, begin(client), "huh")
    assert str(reply["TextResponse"]).startswith("抱歉，我没有理解")  # the unrecognized prompt


def test_chunked_answers_and_silently_closed_keepalive_connections(client: Client) -> None:
    conv = begin(client)
    assert str(say(client, conv, "chunked")["TextResponse"]).startswith("in pieces")
    assert str(say(client, conv, "closeafter")["TextResponse"]).startswith("bye connection")
    # The bot closed that connection without warning: the next turn still works.
    assert str(say(client, conv, "after")["TextResponse"]).startswith("echo after")


@pytest.mark.parametrize("fault", ["slow", "reset", "500", "badjson", "shape", "huge", "garbage"])
def test_a_failing_bot_gives_the_fallback_within_budget(client: Client, fault: str) -> None:
    conv = begin(client)
    started = time.monotonic()
    reply = say(client, conv, fault)
    elapsed = time.monotonic() - started
    assert reply["TextResponse"] == FALLBACK
    assert reply["Action"] == "TransferToAgent"
    assert orjson.loads(str(reply["ActionParams"])) == {"skillGroupId": "fallback"}
    # Behaviour, not speed: the caller is never left waiting on the bot.
    assert elapsed < BUDGET_MS / 1000 + 1.0
    # The conversation goes on.
    assert str(say(client, conv, "still here")["TextResponse"]).startswith("echo still here")


@pytest.mark.parametrize("instance", ["nowhere", "refused"])
def test_dns_failure_and_connection_refused_give_the_fallback(
    client: Client, instance: str
) -> None:
    reply = say(client, begin(client, instance), "hello", instance)
    assert reply["TextResponse"] == FALLBACK and reply["Action"] == "TransferToAgent"


def test_fallback_turns_are_labelled_in_metrics(client: Client, gw: GatewayProcess) -> None:
    say(client, begin(client), "500")
    _, _, body = gw.get("/metrics")
    text = body.decode()
    m = re.search(
        r'ivrgw_turn_duration_seconds_count\{front="rpc",operation="Dialogue",outcome="fallback"\} (\d+)',
        text,
    ) or re.search(
        r'ivrgw_turn_duration_seconds_count\{operation="Dialogue",front="rpc",outcome="fallback"\} (\d+)',
        text,
    )
    assert m is not None and int(m.group(1)) >= 1
    assert "ivrgw_pool_connects_total{" in text
    assert SECRET not in text


def test_a_retried_turn_runs_once_while_the_first_is_in_flight(
    client: Client, gw: GatewayProcess, bot: tuple[Bot, LoopbackServer]
) -> None:
    conv = begin(client)
    p = client.signed_v1_params(
        {"Action": "Dialogue", "InstanceId": "shop", "ConversationId": conv, "Utterance": "slowish"}
    )
    target = "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items())
    before = len(bot[1].requests)
    replies: list[dict[str, object]] = []

    def send() -> None:
        with Client(gw.port) as c:
            r = c.raw("GET", target)
            assert r.status == 200, r.json
            replies.append(r.json)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(replies) == 3
    assert len({r["TextResponse"] for r in replies}) == 1
    assert str(replies[0]["TextResponse"]).startswith("slowish 2")
    assert len(bot[1].requests) - before == 1


def test_turns_of_one_conversation_run_in_order(
    client: Client, gw: GatewayProcess, bot: tuple[Bot, LoopbackServer]
) -> None:
    conv = begin(client)
    replies: dict[str, str] = {}

    def send(text: str) -> None:
        with Client(gw.port) as c:
            replies[text] = str(say(c, conv, text)["TextResponse"])

    first = threading.Thread(target=send, args=("slowish",))
    first.start()
    time.sleep(0.1)
    send("next")
    first.join(10)
    assert replies["slowish"].startswith("slowish 2")
    # The second turn waited for the first: it is turn 3, not another turn 2.
    turns = [r.json["turn"] for r in bot[1].requests if r.json["conversation_id"] == conv]  # type: ignore[index]
    assert turns == [2, 3]


def test_associate_chatbot_instance(gw: GatewayProcess, client: Client) -> None:
    r = client.call(
        {
            "Action": "AssociateChatbotInstance",
            "InstanceId": "demo",
            "ChatbotInstanceId": "shop",
            "ChatbotName": "Shop bot",
        }
    )
    assert r.status == 200 and set(r.json) == {"RequestId"}
    conv = begin(client, "demo")
    assert str(say(client, conv, "hello", "demo")["TextResponse"]).startswith("echo hello")
    r = client.call(
        {"Action": "AssociateChatbotInstance", "InstanceId": "demo", "ChatbotInstanceId": "rules"}
    )
    assert r.status == 200
    reply = say(client, begin(client, "demo"), "查询余额", "demo")
    assert "余额" in str(reply["TextResponse"])
    r = client.call(
        {"Action": "AssociateChatbotInstance", "InstanceId": "demo", "ChatbotInstanceId": "nope"}
    )
    assert r.status == 404 and r.json["Code"] == "InvalidChatbotInstanceId.NotFound"
    r = client.call(
        {"Action": "AssociateChatbotInstance", "InstanceId": "missing", "ChatbotInstanceId": "shop"}
    )
    assert r.status == 404 and r.json["Code"] == "InvalidInstanceId.NotFound"
    r = client.call({"Action": "AssociateChatbotInstance", "InstanceId": "demo"})
    assert r.status == 400 and r.json["Code"] == "MissingChatbotInstanceId"
    with Client(gw.port, RO_KEY_ID, RO_SECRET) as viewer:
        r = viewer.call(
            {
                "Action": "AssociateChatbotInstance",
                "InstanceId": "demo",
                "ChatbotInstanceId": "shop",
            }
        )
    assert r.status == 403 and r.json["Code"] == "Forbidden.RAM"


def test_breaker_opens_sends_nothing_while_open_and_closes_after_a_probe(
    tmp_path: Path, bot: tuple[Bot, LoopbackServer]
) -> None:
    g = start_gateway(tmp_path, bot[1].port, failures=2, reset_ms=400)
    try:
        with Client(g.port) as c:
            conv = begin(c)
            say(c, conv, "500")
            say(c, conv, "500")
            sent = len(bot[1].requests)
            reply = say(c, conv, "hello")  # open: straight to the fallback
            assert reply["TextResponse"] == FALLBACK
            assert len(bot[1].requests) == sent
            _, _, body = g.get("/metrics")
            assert 'ivrgw_breaker_state{backend="shop"} 1.0' in body.decode()
            time.sleep(0.5)
            reply = say(c, conv, "hello")  # half-open: the probe goes through
            assert str(reply["TextResponse"]).startswith("echo hello")
            _, _, body = g.get("/metrics")
            assert 'ivrgw_breaker_state{backend="shop"} 0.0' in body.decode()
            assert 'ivrgw_breaker_opened_total{backend="shop"} 1.0' in body.decode()
    finally:
        g.stop()


def test_config_naming_an_unknown_bot_fails_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = write_config(tmp_path)
    instance_file(tmp_path, "lost", f"missing-{uuid.uuid4().hex[:6]}")
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "lost.toml" in r.stderr and "Chatbot" in r.stderr


@pytest.mark.parametrize(
    "raw",
    [
        b"[1]",
        b'{"answer": 5}',
        b'{"action": "Dance"}',
        b'{"answer": "x", "interruptible": "yes"}',
        b'{"answer": "x", "variables": {"a": [1]}}',
        b'{"answer": "x", "variables": [1]}',
        b'{"answer": "x", "action_params": "[1]"}',
        b'{"answer": "x", "state": 7}',
        ('{"answer": "' + "x" * 2001 + '"}').encode(),
    ],
)
def test_parse_reply_refuses_the_wrong_shape(raw: bytes) -> None:
    from gateway import errors
    from gateway.bots.webhook import parse_reply

    with pytest.raises(errors.BackendProtocolError):
        parse_reply(raw)


def test_parse_reply_shapes() -> None:
    from gateway.bots.webhook import parse_reply
    from gateway.dialogue.operations import Action

    assert parse_reply(b"") is None and parse_reply(b"{}") is None
    assert parse_reply(b'{"answer": ""}') is None
    a = parse_reply(b'{"answer": "hi"}')
    assert a is not None and a.text == "hi" and a.action is Action.BROADCAST
    b = parse_reply(
        b'{"action": "HangUp", "action_params": "{\\"cause\\": 16}", "variables": {"n": 1, "t": true}}'
    )
    assert b is not None and b.action is Action.HANG_UP and b.text == ""
    assert b.action_params == '{"cause": 16}' and b.variables == {"n": "1", "t": "true"}

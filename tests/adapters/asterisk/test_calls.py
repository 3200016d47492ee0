"""Whole calls through ARI: the fake Asterisk (tests/fake_ari.py) in this process,
a real gateway process with the Asterisk adapter, prompts synthesised by
espeak-ng and fetched by the fake from the gateway's /media/ route."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import GatewayProcess, free_port, write_config
from tests.fake_ari import FakeAsterisk, FakeChannel

USER, PASSWORD, APP = "ivrgw", "ari-secret", "ivrgw"
TOKEN = "webhook-token-0123456789"


def config(d: Path, ari_port: int, gw_port: int) -> Path:
    return write_config(
        d,
        # Short silences keep the tests short.
        demo_overrides={r"^Timeout = 10$": "Timeout = 1"},
        extra=f"""
[adapters.asterisk]
enabled = true
url = "http://127.0.0.1:{ari_port}"
username = "{USER}"
password = "{PASSWORD}"
app = "{APP}"
default_instance = "demo"
media_url = "http://127.0.0.1:{gw_port}/media/"
tts_cache_dir = "tts"
inter_digit_ms = 400

[adapters.asterisk.transfer]
agents = {{ complaints = "agents,1002,1", general = "agents,1004,1", fallbackSkillGroup = "agents,1003,1" }}
ivrs = {{ "lost-card" = "ivr-lost,s,1" }}

[adapters.webhook]
enabled = true
tokens = ["{TOKEN}"]
""",
    )


@pytest.fixture(scope="module")
def ari() -> Iterator[FakeAsterisk]:
    with FakeAsterisk(username=USER, password=PASSWORD, app=APP) as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, ari: FakeAsterisk) -> Iterator[GatewayProcess]:
    d = tmp_path_factory.mktemp("ari")
    port = free_port()
    g = GatewayProcess(config(d, ari.port, port), d / "gateway.log", port=port)
    ari.wait_connected()
    yield g
    g.stop()


def wait(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def finished(channel: FakeChannel, n: int) -> bool:
    return sum(p.state in ("done", "failed") for p in channel.playbacks) >= n


def test_greeting_dtmf_menu_and_a_transfer(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    channel = ari.originate(caller="13800000000", args=["demo"])
    wait(lambda: finished(channel, 1))
    greeting = channel.playbacks[0]
    assert greeting.media[0].startswith(f"sound:http://127.0.0.1:{gw.port}/media/")
    assert greeting.state == "done"
    channel.press("2")  # the card menu, after the inter-digit timeout
    wait(lambda: len(channel.playbacks) >= 2)
    channel.press("9#")  # back to the main menu, ended by '#'
    wait(lambda: len(channel.playbacks) >= 3)
    channel.press("0")  # an agent
    wait(lambda: channel.continued_to is not None)
    assert channel.continued_to == ("agents", "1004", 1)
    wait(lambda: not channel.in_stasis)


def test_silence_up_to_the_final_hangup(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    channel = ari.originate(args=["demo"])
    # Greeting, two silence prompts, then the final prompt and a hang-up.
    wait(lambda: channel.destroyed, timeout=30)
    assert channel.hangup_reason == "normal"
    assert len(channel.playbacks) == 4


def test_barge_in_stops_an_interruptible_prompt(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    channel = ari.originate(args=["demo"])
    wait(lambda: len(channel.playbacks) >= 1 and channel.playbacks[0].state == "playing")
    channel.press("1")
    wait(lambda: len(channel.playbacks) >= 2)
    assert channel.playbacks[0].stopped  # DELETE /playbacks/{id}
    assert any(r.method == "DELETE" and r.path.startswith("/ari/playbacks/") for r in ari.requests)
    channel.hang_up()
    wait(lambda: channel.destroyed)


def test_hangup_in_the_middle_of_a_prompt(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    channel = ari.originate(args=["demo"])
    wait(lambda: len(channel.playbacks) >= 1)
    channel.hang_up()
    wait(lambda: channel.destroyed)
    time.sleep(0.3)
    # The conversation ended exactly once; nothing is left live.
    _, _, metrics = gw.get("/metrics")
    text = metrics.decode()
    assert 'ivrgw_active_conversations{instance="demo"} 0.0' in text


def test_ari_reconnect_in_the_middle_of_a_call(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    channel = ari.originate(args=["demo"])
    wait(lambda: finished(channel, 1))
    before = ari.connects
    ari.drop_websocket()
    wait(lambda: ari.connects > before)
    channel.press("0")
    wait(lambda: channel.continued_to is not None)
    assert channel.continued_to == ("agents", "1004", 1)
    _, _, metrics = gw.get("/metrics")
    assert "ivrgw_ari_reconnects_total" in metrics.decode()


def test_a_404_on_play_ends_the_call_cleanly(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    ari.fail_next("POST", "/channels/*/play", 404)
    channel = ari.originate(args=["demo"])
    wait(lambda: any(r.status == 404 for r in ari.requests))
    time.sleep(0.3)
    _, _, metrics = gw.get("/metrics")
    text = metrics.decode()
    assert 'ivrgw_ari_rest_errors_total{app="ivrgw",server="asterisk",status="404"}' in text
    assert 'ivrgw_active_conversations{instance="demo"} 0.0' in text
    channel.hang_up()


def test_an_utterance_injected_over_the_json_webhook(gw: GatewayProcess, ari: FakeAsterisk) -> None:
    channel = ari.originate(args=["demo", "balance=42"])
    wait(lambda: finished(channel, 1))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "POST",
        f"/v1/calls/{channel.id}/events",
        orjson.dumps({"type": "speech", "text": "查询余额", "instance_id": "demo"}),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    reply = orjson.loads(conn.getresponse().read())
    conn.close()
    assert "42" in reply["text"]
    wait(lambda: len(channel.playbacks) >= 2)  # the answer is played on the channel
    channel.hang_up()
    wait(lambda: channel.destroyed)


def test_unreachable_ari_leaves_other_fronts_serving(tmp_path: Path) -> None:
    port = free_port()
    g = GatewayProcess(
        config(tmp_path, free_port(), port), tmp_path / "gw.log", port=port, ready_path="/healthz"
    )
    try:
        time.sleep(0.5)
        status, _, body = g.get("/readyz")
        assert status == 503
        assert orjson.loads(body)["adapters"] == {"asterisk": False}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/v1/calls/c1/events",
            orjson.dumps({"type": "start", "instance_id": "demo", "calling": "1"}),
            {"Authorization": f"Bearer {TOKEN}"},
        )
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        g.stop()


def test_two_asterisks_each_with_its_own_client_and_calls(tmp_path: Path) -> None:
    """`[[adapters.asterisk.servers]]`: one ARI client per Asterisk, both serving calls,
    /readyz naming each, and one server down leaves the other serving."""
    port = free_port()
    with (
        FakeAsterisk(username=USER, password=PASSWORD, app=APP) as east,
        FakeAsterisk(
            username="west", password="west-secret", app="ivr-west", asterisk_id="02:fc:00:00:00:02"
        ) as west,
    ):
        cfg = write_config(
            tmp_path,
            extra=f"""
[adapters.asterisk]
enabled = true
username = "{USER}"
password = "{PASSWORD}"
app = "{APP}"
default_instance = "demo"
media_url = "http://127.0.0.1:{port}/media/"
tts_cache_dir = "tts"
inter_digit_ms = 300
# Inherited by both servers.
transfer = {{ agents = {{ general = "agents,1004,1" }} }}

[[adapters.asterisk.servers]]
name = "east"
url = "http://127.0.0.1:{east.port}"

[[adapters.asterisk.servers]]
name = "west"
url = "http://127.0.0.1:{west.port}"
username = "west"
password = "west-secret"
app = "ivr-west"
""",
        )
        g = GatewayProcess(cfg, tmp_path / "gateway.log", port=port)
        try:
            east.wait_connected()
            west.wait_connected()
            status, _, body = g.get("/readyz")
            assert status == 200
            assert orjson.loads(body)["adapters"] == {"asterisk:east": True, "asterisk:west": True}
            a = east.originate(args=["demo"])
            b = west.originate(args=["demo"])
            wait(lambda: finished(a, 1) and finished(b, 1))
            a.press("0")
            b.press("0")
            wait(lambda: a.continued_to is not None and b.continued_to is not None)
            assert a.continued_to == b.continued_to == ("agents", "1004", 1)
            # Both fakes number channels alike; conversations are told apart by server.
            assert a.id == b.id
            assert sum(r.path == f"/ari/channels/{a.id}/continue" for r in east.requests) == 1
            assert sum(r.path == f"/ari/channels/{b.id}/continue" for r in west.requests) == 1
            west.stop()
            wait(lambda: g.get("/readyz")[0] == 503)
            status, _, body = g.get("/readyz")
            assert orjson.loads(body)["adapters"] == {"asterisk:east": True, "asterisk:west": False}
            c = east.originate(args=["demo"])
            wait(lambda: finished(c, 1))
            _, _, metrics = g.get("/metrics")
            text = metrics.decode()
            assert 'ivrgw_ari_connected{app="ivrgw",server="east"} 1.0' in text
            assert 'ivrgw_ari_connected{app="ivr-west",server="west"} 0.0' in text
            c.hang_up()
        finally:
            g.stop()


def test_server_tables_are_validated(tmp_path: Path) -> None:
    cases = {
        "servers = []": "adapters.asterisk.servers",
        '[[adapters.asterisk.servers]]\nurl = "http://127.0.0.1:1"': "servers[0].name",
        '[[adapters.asterisk.servers]]\nname = "a"\ntts_cache_dir = "x"': "servers[0].tts_cache_dir",
        '[[adapters.asterisk.servers]]\nname = "a"\n[[adapters.asterisk.servers]]\nname = "a"\n'
        'url = "http://127.0.0.1:2"': "servers[1].name",
    }
    for i, (body, key) in enumerate(cases.items()):
        d = tmp_path / str(i)
        head = '[adapters.asterisk]\nenabled = true\nusername = "u"\npassword = "p"\n'
        if body.startswith("servers"):
            head += body + "\n"
            body = ""
        cfg = write_config(d, extra=head + body)
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (body, proc.stderr)
        assert key in proc.stderr, (key, proc.stderr)

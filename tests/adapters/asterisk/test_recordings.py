"""Whole-call recordings through ARI: the fake Asterisk (tests/fake_ari.py) in this
process, a real gateway process with `record_calls`, its real SQLite file. Each
call is tapped by a snoop channel, recorded there while prompts play, fetched
from the stored-recordings API when the call ends, and deleted from the spool."""

from __future__ import annotations

import re
import sqlite3
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from adapters.asterisk.transport import parse_config
from gateway.api.links import Links
from gateway.dialogue.config import ConfigProblem
from tests.conftest import ROOT, Client, GatewayProcess, free_port, write_config
from tests.fake_ari import FakeAsterisk, FakeChannel, wav_seconds

USER, PASSWORD, APP = "ivrgw", "ari-secret", "ivrgw"


@pytest.fixture(scope="module")
def ari() -> Iterator[FakeAsterisk]:
    with FakeAsterisk(username=USER, password=PASSWORD, app=APP) as fake:
        yield fake


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("arirec")


@pytest.fixture(scope="module")
def gw(gw_dir: Path, ari: FakeAsterisk) -> Iterator[GatewayProcess]:
    port = free_port()
    config = write_config(
        gw_dir,
        extra=f"""
[store]
batch_ms = 5

[adapters.asterisk]
enabled = true
url = "http://127.0.0.1:{ari.port}"
username = "{USER}"
password = "{PASSWORD}"
app = "{APP}"
default_instance = "demo"
media_url = "http://127.0.0.1:{port}/media/"
tts_cache_dir = "tts"
inter_digit_ms = 300
record_calls = true
recordings_dir = "recordings"

[adapters.asterisk.transfer]
agents = {{ general = "agents,1004,1" }}
""",
    )
    g = GatewayProcess(config, gw_dir / "gateway.log", port=port)
    ari.wait_connected()
    yield g
    g.stop()


def wait(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def conversation(gw_dir: Path, conv: str) -> sqlite3.Row | None:
    with sqlite3.connect(f"file:{gw_dir / 'var' / 'gateway.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM conversations WHERE ConversationId = ?", (conv,)
        ).fetchone()
        return row


def ended_row(gw_dir: Path, conv: str, *, recorded: bool) -> sqlite3.Row:
    """The conversation's row once it has ended (and has its recording, if `recorded`)."""
    found: list[sqlite3.Row] = []

    def ready() -> bool:
        row = conversation(gw_dir, conv)
        if row is None or row["EndTime"] is None or (recorded and not row["RecordingFilePath"]):
            return False
        found.append(row)
        return True

    wait(ready)
    return found[-1]


def metric(gw: GatewayProcess, outcome: str) -> float:
    _, _, body = gw.get("/metrics")
    pattern = rf'ivrgw_ari_recordings_total{{outcome="{outcome}",server="asterisk"}} (\S+)'
    match = re.search(pattern, body.decode())
    assert match, body.decode()[-2000:]
    return float(match.group(1))


def calls_of(ari: FakeAsterisk, method: str, path: str) -> list[int]:
    return [r.status for r in ari.requests if r.method == method and r.path == path]


def greeted(channel: FakeChannel) -> bool:
    return bool(channel.playbacks) and channel.playbacks[0].state in ("done", "failed")


def test_a_recorded_call_is_saved_reported_linked_and_deleted(
    gw: GatewayProcess, ari: FakeAsterisk, gw_dir: Path
) -> None:
    channel = ari.originate(caller="13800000000", args=["demo"])
    wait(lambda: greeted(channel))
    assert channel.playbacks[0].state == "done"  # the recording never held a prompt back
    snoop = ari.channels[f"ivrgw-snoop-{channel.id}"]
    assert snoop.name.startswith(f"Snoop/{channel.id}-") and snoop.spy == "both"
    name = f"ivrgw-{channel.id}"
    [live] = snoop.recordings
    assert live.name == name and live.state == "recording"
    assert not channel.recordings  # nothing queued on the call's own control
    time.sleep(1.1)
    channel.hang_up()

    row = ended_row(gw_dir, channel.id, recorded=True)
    assert row["InstanceId"] == "demo"
    assert row["RecordingFileName"] == f"{name}.wav"
    assert row["RecordingFilePath"] == f"recordings-asterisk/demo/{channel.id}/{name}.wav"
    saved = gw_dir / "recordings" / "demo" / channel.id / f"{name}.wav"
    data = saved.read_bytes()
    assert wav_seconds(data, 8000) >= 1.0
    assert live.state == "done" and live.stopped_by == "hangup"
    # Fetched once, then deleted from the spool.
    stored = f"/ari/recordings/stored/{name}"
    assert calls_of(ari, "GET", stored + "/file") == [200]
    assert calls_of(ari, "DELETE", stored) == [204]
    assert name not in ari.stored_recordings
    assert snoop.destroyed and channel.destroyed
    assert not list(saved.parent.glob(".*.part"))

    # The signed link DescribeRecording hands out serves the same bytes.
    with sqlite3.connect(f"file:{gw_dir / 'var' / 'gateway.db'}?mode=ro", uri=True) as db:
        (key,) = db.execute("SELECT Value FROM meta WHERE Key = 'link_secret'").fetchone()
    kind, _, link_name = row["RecordingFilePath"].partition("/")
    links = Links(bytes.fromhex(key), 60, {kind: gw_dir / "recordings"})
    base = f"http://127.0.0.1:{gw.port}"
    status, headers, body = gw.get(links.url(base, kind, link_name).removeprefix(base))
    assert (status, headers["content-type"], body) == (200, "audio/wav", data)


def test_a_transferred_call_stops_its_recording_and_its_tap(
    gw: GatewayProcess, ari: FakeAsterisk, gw_dir: Path
) -> None:
    channel = ari.originate(args=["demo"])
    wait(lambda: greeted(channel))
    channel.press("0")  # an agent: the call leaves Stasis, the caller stays up
    wait(lambda: channel.continued_to is not None)
    assert channel.continued_to == ("agents", "1004", 1)
    row = ended_row(gw_dir, channel.id, recorded=True)
    name = f"ivrgw-{channel.id}"
    assert row["RecordingFileName"] == f"{name}.wav"
    snoop = ari.channels[f"ivrgw-snoop-{channel.id}"]
    assert snoop.recordings[0].stopped_by == "stop"
    assert calls_of(ari, "POST", f"/ari/recordings/live/{name}/stop") == [204]
    wait(lambda: snoop.destroyed)
    assert snoop.hangup_reason == "normal"  # the gateway hung its tap up
    assert not channel.destroyed  # the caller talks to the agent
    channel.hang_up()


def test_a_failed_fetch_is_counted_and_the_call_flows_on(
    gw: GatewayProcess, ari: FakeAsterisk, gw_dir: Path
) -> None:
    before = metric(gw, "fetch_failed")
    ari.fail_next("GET", "/recordings/stored/*/file", 404, "Recording not found")
    channel = ari.originate(args=["demo"])
    wait(lambda: greeted(channel))
    channel.press("2")  # the card menu still answers
    wait(lambda: len(channel.playbacks) >= 2)
    channel.press("9#")  # back to the main menu
    wait(lambda: len(channel.playbacks) >= 3)
    channel.press("0")
    wait(lambda: channel.continued_to is not None)
    row = ended_row(gw_dir, channel.id, recorded=False)
    wait(lambda: metric(gw, "fetch_failed") == before + 1)
    assert row["RecordingFilePath"] == "" and row["RecordingFileName"] == ""
    name = f"ivrgw-{channel.id}"
    # Not deleted: the spool keeps the only copy.
    assert name in ari.stored_recordings
    assert not calls_of(ari, "DELETE", f"/ari/recordings/stored/{name}")
    assert not (gw_dir / "recordings" / "demo" / channel.id / f"{name}.wav").exists()
    channel.hang_up()


def test_a_refused_recording_leaves_the_call_alone(
    gw: GatewayProcess, ari: FakeAsterisk, gw_dir: Path
) -> None:
    before = metric(gw, "start_failed")
    # A stale file of the same name: record with ifExists=fail answers 409.
    channel_id = f"{int(time.time())}.9001"
    ari.stored_recordings[f"ivrgw-{channel_id}"] = ("wav", b"old")
    channel = ari.originate(args=["demo"], channel_id=channel_id)
    wait(lambda: greeted(channel))
    wait(lambda: metric(gw, "start_failed") == before + 1)
    assert calls_of(ari, "POST", f"/ari/channels/ivrgw-snoop-{channel_id}/record") == [409]
    channel.press("0")
    wait(lambda: channel.continued_to == ("agents", "1004", 1))
    row = ended_row(gw_dir, channel_id, recorded=False)
    assert row["RecordingFilePath"] == ""
    assert ari.stored_recordings[f"ivrgw-{channel_id}"] == ("wav", b"old")  # left alone
    snoop = ari.channels[f"ivrgw-snoop-{channel_id}"]
    wait(lambda: snoop.destroyed)  # no tap left behind
    channel.hang_up()


def test_ari_refusing_the_snoop_leaves_the_call_alone(
    gw: GatewayProcess, ari: FakeAsterisk, gw_dir: Path
) -> None:
    before = metric(gw, "start_failed")
    ari.fail_next("POST", "/channels/*/snoop", 500, "Snoop channel could not be created")
    channel = ari.originate(args=["demo"])
    wait(lambda: greeted(channel))
    assert channel.playbacks[0].state == "done"
    channel.hang_up()
    row = ended_row(gw_dir, channel.id, recorded=False)
    assert row["RecordingFilePath"] == ""
    assert metric(gw, "start_failed") == before + 1
    assert f"ivrgw-snoop-{channel.id}" not in ari.channels


def test_recording_keys_in_the_asterisk_table(tmp_path: Path) -> None:
    base = {"username": "u", "password": "p"}
    [off] = parse_config(base, "adapters.asterisk", tmp_path)
    assert off.recording is None
    [on] = parse_config({**base, "record_calls": True}, "adapters.asterisk", tmp_path)
    assert on.recording is not None
    assert on.recording.directory == tmp_path / "var" / "recordings"
    assert (on.recording.format, on.recording.max_bytes) == ("wav", 100 * 1_048_576)
    with pytest.raises(ConfigProblem, match="record_format"):
        parse_config({**base, "record_format": "mp9"}, "adapters.asterisk", tmp_path)
    servers = {**base, "servers": [{"name": "east", "recordings_dir": "/elsewhere"}]}
    with pytest.raises(ConfigProblem, match=r"servers\[0\]\.recordings_dir"):
        parse_config(servers, "adapters.asterisk", tmp_path)
    # The shipped gateway.toml's table parses (with a password), recording off.
    shipped = tomllib.loads((ROOT / "config" / "gateway.toml").read_text(encoding="utf-8"))
    table = {**shipped["adapters"]["asterisk"], "password": "p"}
    [default] = parse_config(table, "adapters.asterisk", tmp_path)
    assert default.recording is None


def test_describe_recording_hands_out_a_working_link(
    gw: GatewayProcess, ari: FakeAsterisk, gw_dir: Path
) -> None:
    channel = ari.originate(args=["demo"])
    wait(lambda: greeted(channel))
    channel.hang_up()
    ended_row(gw_dir, channel.id, recorded=True)
    client = Client(gw.port)
    try:
        r = client.call(
            {"Action": "DescribeRecording", "InstanceId": "demo", "ConversationId": channel.id}
        )
    finally:
        client.close()
    assert r.status == 200, r.body
    assert r.json["FileName"] == f"ivrgw-{channel.id}.wav"
    url = urlsplit(r.json["FilePath"])
    status, headers, body = gw.get(f"{url.path}?{url.query}")
    assert (status, headers["content-type"]) == (200, "audio/wav")
    saved = gw_dir / "recordings" / "demo" / channel.id / f"ivrgw-{channel.id}.wav"
    assert body == saved.read_bytes()

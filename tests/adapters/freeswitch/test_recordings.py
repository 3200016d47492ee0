"""A recorded FreeSWITCH call, end to end: the fake FreeSWITCH uploads its
`<recordCall>` file with the exiting request, the gateway stores it, the
conversation row in the real SQLite file names it, and a signed link made
with the database's link key serves the same bytes back."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.api.links import Links
from tests.conftest import Client, GatewayProcess, conversation_id, write_config
from tests.fake_freeswitch import RECORDING, Caller, FakeFreeSwitch, Silence, Speech

USER, PASSWORD = "fs", "fs-password-0123"


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fsrec")


@pytest.fixture(scope="module")
def gw(gw_dir: Path) -> Iterator[GatewayProcess]:
    config = write_config(
        gw_dir,
        extra=f"""
[store]
batch_ms = 5

[adapters.freeswitch]
enabled = true
username = "{USER}"
password = "{PASSWORD}"
default_instance = "demo"
record_calls = true
recordings_dir = "recordings"
""",
    )
    g = GatewayProcess(config, gw_dir / "gateway.log")
    yield g
    g.stop()


def row(db: Path, conversation: str, timeout: float = 10.0) -> sqlite3.Row:
    """The conversation's row once its recording is recorded (the writer batches)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(
                "SELECT * FROM conversations WHERE ConversationId = ?", (conversation,)
            ).fetchone()
        if found is not None and found["RecordingFilePath"]:
            return found
        assert time.monotonic() < deadline, f"no recording for {conversation}"
        time.sleep(0.05)


def link_key(db: Path) -> bytes:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (value,) = conn.execute("SELECT Value FROM meta WHERE Key = 'link_secret'").fetchone()
    return bytes.fromhex(value)


def recorded_call(gw: GatewayProcess) -> str:
    session = conversation_id()
    fs = FakeFreeSwitch(
        gw.port, params={"instance": "demo"}, credentials=(USER, PASSWORD), session_id=session
    )
    log = fs.hang_up_now(Caller([Speech("营业时间"), Silence()]), 2)
    assert log.exiting is not None and log.exiting.method == "POST"
    return session


def test_recording_upload_fills_the_conversation_row(gw: GatewayProcess, gw_dir: Path) -> None:
    session = recorded_call(gw)
    found = row(gw_dir / "var" / "gateway.db", session)
    assert found["InstanceId"] == "demo"
    assert found["RecordingFileName"] == f"{session}.wav"
    assert found["RecordingFilePath"] == f"recordings-freeswitch/demo/{session}/{session}.wav"
    stored = gw_dir / "recordings" / "demo" / session / f"{session}.wav"
    assert stored.read_bytes() == RECORDING


def test_recording_served_by_a_signed_link(gw: GatewayProcess, gw_dir: Path) -> None:
    session = recorded_call(gw)
    db = gw_dir / "var" / "gateway.db"
    kind, _, name = row(db, session)["RecordingFilePath"].partition("/")
    links = Links(link_key(db), 60, {kind: gw_dir / "recordings"})
    url = links.url(f"http://127.0.0.1:{gw.port}", kind, name)
    status, headers, body = gw.get(url.removeprefix(f"http://127.0.0.1:{gw.port}"))
    assert status == 200, body
    assert headers["content-type"] == "audio/wav"
    assert body == RECORDING
    # The same link with another signature is refused.
    status, _, _ = gw.get(url.removeprefix(f"http://127.0.0.1:{gw.port}")[:-2] + "xx")
    assert status == 403


def test_describe_recording_hands_out_a_working_link(gw: GatewayProcess, gw_dir: Path) -> None:
    session = recorded_call(gw)
    row(gw_dir / "var" / "gateway.db", session)
    client = Client(gw.port)
    try:
        r = client.call(
            {"Action": "DescribeRecording", "InstanceId": "demo", "ConversationId": session}
        )
    finally:
        client.close()
    assert r.status == 200, r.body
    assert r.json["FileName"] == f"{session}.wav"
    url = urlsplit(r.json["FilePath"])
    assert url.path == f"/files/recordings-freeswitch/demo/{session}/{session}.wav"
    status, _, body = gw.get(f"{url.path}?{url.query}")
    assert (status, body) == (200, RECORDING)

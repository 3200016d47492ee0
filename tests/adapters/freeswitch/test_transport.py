"""The httapi route of a real gateway process: auth, bad requests, idempotency,
recordings and the fallback document. Whole calls run in test_calls.py."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from tests.conftest import GatewayProcess, conversation_id, write_config

PATH = "/freeswitch/httapi"
USER, PASSWORD, SECRET = "fs", "fs-password-0123", "shared-secret-0123456789"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fs")


@pytest.fixture(scope="module")
def gw(gw_dir: Path) -> Iterator[GatewayProcess]:
    config = write_config(
        gw_dir,
        extra=f"""
[adapters.freeswitch]
enabled = true
username = "{USER}"
password = "{PASSWORD}"
secret = "{SECRET}"
recordings_dir = "recordings"
[adapters.freeswitch.transfer]
default_agent = "1000"
agents = {{ complaints = "1002" }}
""",
    )
    g = GatewayProcess(config, gw_dir / "gateway.log")
    yield g
    g.stop()


def query(fields: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(v, safe='/')}" for k, v in fields.items())


def call_fields(session: str, **more: str) -> dict[str, str]:
    return {
        "session_id": session,
        "url": f"http://127.0.0.1{PATH}",
        "instance": "demo",
        "hostname": "fs1",
        "Caller-Caller-ID-Number": "1000",
        "Caller-Destination-Number": "5000",
        **more,
    }


def send(
    gw: GatewayProcess,
    fields: dict[str, str] | None = None,
    *,
    method: str = "GET",
    auth: str | None = BASIC,
    body: bytes = b"",
    content_type: str = "",
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    headers = {"User-Agent": "mod_httapi/1.0", "Accept": "*/*"}
    if auth:
        headers["Authorization"] = auth
    if content_type:
        headers["Content-Type"] = content_type
    target = PATH + ("?" + query(fields) if fields else "")
    try:
        conn.request(method, target, body or None, headers)
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read()
    finally:
        conn.close()


def work(document: bytes) -> list[ElementTree.Element]:
    root = ElementTree.fromstring(document)
    found = root.find("work")
    assert found is not None
    return list(found)


def test_the_first_request_gets_the_greeting_document(gw: GatewayProcess) -> None:
    status, ctype, doc = send(gw, call_fields(conversation_id()))
    assert status == 200 and ctype.startswith("text/xml")
    root = ElementTree.fromstring(doc)
    assert root.get("type") == "xml/freeswitch-httapi"
    assert root.findtext("params/ivrgw_turn") == "1" and root.findtext("params/instance") == "demo"
    [speak] = work(doc)
    assert speak.tag == "speak" and speak.get("engine") == "flite"
    assert "欢迎" in (speak.get("text") or "") and speak.get("name") == "ivrgw_input"


def test_post_form_and_the_shared_secret(gw: GatewayProcess) -> None:
    body = query(call_fields(conversation_id(), ivrgw_secret=SECRET)).encode()
    status, _, doc = send(
        gw, method="POST", auth=None, body=body, content_type="application/x-www-form-urlencoded"
    )
    assert status == 200 and work(doc)[0].tag == "speak"


@pytest.mark.parametrize(
    "auth",
    [None, "Basic " + base64.b64encode(b"fs:wrong").decode(), "Bearer x"],
)
def test_anything_but_the_credentials_is_401(gw: GatewayProcess, auth: str | None) -> None:
    status, _, _ = send(gw, call_fields(conversation_id()), auth=auth)
    assert status == 401
    fields = call_fields(conversation_id(), ivrgw_secret="wrong-secret")
    assert send(gw, fields, auth=None)[0] == 401


def test_a_repeated_request_gets_the_same_document_and_runs_once(gw: GatewayProcess) -> None:
    session = conversation_id()
    send(gw, call_fields(session))
    silence = call_fields(session, ivrgw_turn="1")
    first = send(gw, silence)
    assert send(gw, silence) == first
    # One silence counted: turns 2 and 3 reach the threshold of 3.
    assert work(send(gw, call_fields(session, ivrgw_turn="2"))[2])[0].tag == "speak"
    final = work(send(gw, call_fields(session, ivrgw_turn="3"))[2])
    assert [e.tag for e in final] == ["speak", "hangup"]


def test_a_dtmf_menu_a_complaint_transfer_and_the_end(gw: GatewayProcess) -> None:
    session = conversation_id()
    send(gw, call_fields(session))
    menu = work(
        send(gw, call_fields(session, ivrgw_turn="1", ivrgw_input="2", input_type="dtmf"))[2]
    )
    assert menu[0].tag == "speak"
    said = call_fields(
        session, ivrgw_turn="2", ivrgw_input="我要投诉", input_type="detected_speech"
    )
    transfer = work(send(gw, said)[2])
    assert [e.tag for e in transfer] == ["speak", "dial"] and transfer[1].text == "1002"
    status, ctype, body = send(gw, call_fields(session, ivrgw_turn="3", exiting="true"))
    assert (status, ctype, body) == (200, "text/plain", b"OK")


@pytest.mark.parametrize(
    "garbage",
    ["<result><interpretation", "<!DOCTYPE x [<!ENTITY a 'b'>]><result/>", "\x00\x01"],
)
def test_a_garbage_recognizer_result_is_an_unrecognized_turn(
    gw: GatewayProcess, garbage: str
) -> None:
    session = conversation_id()
    send(gw, call_fields(session))
    fields = call_fields(session, ivrgw_turn="1", ivrgw_input=garbage, input_type="detected_speech")
    status, ctype, doc = send(gw, fields)
    assert status == 200 and ctype.startswith("text/xml")
    assert "没有理解" in (work(doc)[0].get("text") or "")


def test_requests_that_cannot_be_answered_with_a_call_document(gw: GatewayProcess) -> None:
    status, ctype, body = send(gw, {"hostname": "fs1"})
    assert status == 400 and ctype.startswith("text/plain") and b"MissingSessionId" in body
    assert send(gw, call_fields(conversation_id()), method="PUT")[0] == 405
    # Unknown instance: a document that apologises and hangs up, not silence.
    status, ctype, doc = send(gw, call_fields(conversation_id(), instance="nope"))
    assert status == 200 and ctype.startswith("text/xml")
    assert [e.tag for e in work(doc)] == ["speak", "hangup"]
    # A call the gateway does not know: the instance's fallback.
    status, _, doc = send(gw, call_fields(conversation_id(), ivrgw_turn="4"))
    assert status == 200 and [e.tag for e in work(doc)] == ["speak", "dial"]


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]], boundary: str) -> bytes:
    out = b""
    for name, value in fields.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for name, (filename, data) in files.items():
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def test_a_recording_upload_is_stored_and_linked(gw: GatewayProcess, gw_dir: Path) -> None:
    session = conversation_id()
    send(gw, call_fields(session))
    audio = b"RIFF" + bytes(range(256)) * 40
    body = multipart(
        call_fields(session, ivrgw_turn="1", exiting="true"),
        {"recorded_file": (f"{session}.wav", audio)},
        "XyZ123",
    )
    status, _, reply = send(
        gw, method="POST", body=body, content_type="multipart/form-data; boundary=XyZ123"
    )
    assert (status, reply) == (200, b"OK")
    stored = gw_dir / "recordings" / "demo" / session / f"{session}.wav"
    assert stored.read_bytes() == audio
    meta = json.loads(stored.with_suffix(".wav.json").read_text())
    assert meta["conversation_id"] == session and meta["instance_id"] == "demo"


def test_a_truncated_upload_is_400(gw: GatewayProcess) -> None:
    session = conversation_id()
    body = multipart(call_fields(session, exiting="true"), {"f": ("a.wav", b"x" * 100)}, "B")
    status, ctype, _ = send(
        gw, method="POST", body=body[:-20], content_type="multipart/form-data; boundary=B"
    )
    assert status == 400 and ctype.startswith("text/plain")


def test_metrics_carry_the_freeswitch_front(gw: GatewayProcess) -> None:
    send(gw, call_fields(conversation_id()))
    _, _, body = gw.get("/metrics")
    assert 'front="freeswitch"' in body.decode() and PASSWORD not in body.decode()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("enabled = true", "adapters.freeswitch"),
        ('enabled = true\nusername = "fs"', "adapters.freeswitch.password"),
        (
            'enabled = true\nsecret = "s"\n[adapters.freeswitch.transfer]\nmode = "x"',
            "adapters.freeswitch.transfer.mode",
        ),
        (
            'enabled = true\nsecret = "s"\n[adapters.freeswitch.transfer]\nagents = { a = "bad ext" }',
            "adapters.freeswitch.transfer.agents",
        ),
    ],
)
def test_bad_adapter_config_stops_start_up_naming_the_key(
    tmp_path: Path, table: str, key: str
) -> None:
    import subprocess
    import sys

    config = write_config(tmp_path, extra=f"\n[adapters.freeswitch]\n{table}\n")
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2, r.stderr
    assert key in r.stderr and "gateway.toml" in r.stderr

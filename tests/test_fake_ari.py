"""The fake Asterisk (tests/fake_ari.py) against a minimal ARI client written here.

The client is the `websockets` sync client for the events socket and http.client for REST, so
these tests check the fake's wire format without the gateway. Prompts come from a loopback
http.server serving tiny WAVs. Every server is stopped by its fixture; every wait is bounded.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
import wave
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.fake_ari import FakeAsterisk, ari_timestamp, wav_seconds

# Asterisk 22, as quoted in issue 5.
SAMPLE_START = (
    '{"type":"StasisStart","timestamp":"2026-11-22T03:24:11.420+0000","args":[],"channel":'
    '{"id":"1795317851.2","name":"Local/s@caller-00000001;1","state":"Up","protocol_id":"",'
    '"caller":{"name":"","number":""},"connected":{"name":"","number":""},"accountcode":"",'
    '"dialplan":{"context":"ivr","exten":"s","priority":2,"app_name":"Stasis","app_data":"ivrgw"},'
    '"creationtime":"2026-11-22T03:24:11.419+0000","language":"en"},'
    '"asterisk_id":"02:fc:00:00:00:01","application":"ivrgw"}'
)
SAMPLE_CHANNEL = SAMPLE_START.split('"channel":', 1)[1].rsplit(',"asterisk_id"', 1)[0]
SAMPLE_DTMF = (
    '{"type":"ChannelDtmfReceived","timestamp":"2026-11-22T03:24:14.123+0000","digit":"1",'
    '"duration_ms":100,"channel":' + SAMPLE_CHANNEL + ',"asterisk_id":"02:fc:00:00:00:01",'
    '"application":"ivrgw"}'
)


class Clock:
    """time.time(), unless a test queued the next readings."""

    def __init__(self) -> None:
        self.queue: deque[float] = deque()

    def __call__(self) -> float:
        return self.queue.popleft() if self.queue else time.time()


def make_wav(seconds: float, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\0" * width * channels * int(rate * seconds))
    return out.getvalue()


class MediaServer:
    """A loopback http.server: path -> (status, content type, body); records each request."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, str, bytes]] = {}
        self.extra: dict[str, dict[str, str]] = {}  # path -> more response headers
        self.seen: list[tuple[str, str]] = []  # (path, user agent)
        self.methods: list[tuple[str, str, str | None]] = []  # (method, path, If-None-Match)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(head=False)

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def _answer(self, head: bool) -> None:
                match = self.headers.get("If-None-Match")
                outer.methods.append((self.command, self.path, match))
                if not head:
                    outer.seen.append((self.path, self.headers.get("User-Agent", "")))
                status, ctype, body = outer.files.get(self.path, (404, "text/plain", b"no"))
                extra = outer.extra.get(self.path, {})
                if match is not None and match == extra.get("ETag"):
                    status, body = 304, b""
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeAsterisk]:
    with FakeAsterisk(clock=clock) as server:
        yield server


@pytest.fixture
def media() -> Iterator[MediaServer]:
    server = MediaServer()
    try:
        yield server
    finally:
        server.close()


def basic(user: str = "ivrgw", password: str = "secret") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def events(
    fake: FakeAsterisk,
    *,
    app: str = "ivrgw",
    auth: str | None = None,
    query: str = "",
    protocols: tuple[str, ...] = ("ari",),
) -> ClientConnection:
    """Open the events websocket the way an ARI client does."""
    url = f"ws://127.0.0.1:{fake.port}/ari/events?app={app}&subscribeAll=false{query}"
    headers = {} if auth == "" else {"Authorization": auth or basic()}
    return connect(
        url,
        subprotocols=list(protocols) or None,
        additional_headers=headers,  # type: ignore[arg-type]
        proxy=None,
        open_timeout=5,
        ping_interval=None,
        compression=None,
    )


def rest(
    fake: FakeAsterisk,
    method: str,
    path: str,
    query: dict[str, Any] | None = None,
    body: Any = None,
    auth: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One ARI REST call; returns status, lower-case headers and the decoded JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    headers = {} if auth == "" else {"Authorization": auth or basic()}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    target = "/ari" + path + ("?" + urlencode(query) if query else "")
    try:
        conn.request(method, target, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return (
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            (json.loads(raw) if raw else None),
        )
    finally:
        conn.close()


def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws: ClientConnection, type_: str, timeout: float = 5) -> list[dict[str, Any]]:
    """Events up to and including the first of `type_`."""
    out = []
    deadline = time.monotonic() + timeout
    while not out or out[-1]["type"] != type_:
        out.append(recv(ws, max(0.01, deadline - time.monotonic())))
    return out


def call(fake: FakeAsterisk, ws: ClientConnection, **kw: Any) -> tuple[Any, dict[str, Any]]:
    """originate() and read its StasisStart."""
    ch = fake.originate(**kw)
    start = recv(ws)
    assert start["type"] == "StasisStart" and start["channel"]["id"] == ch.id
    return ch, start


def test_fake_ari_refuses_bad_credentials_before_the_upgrade(fake: FakeAsterisk) -> None:
    for auth in ("", basic("ivrgw", "wrong"), basic("other", "secret")):
        with pytest.raises(InvalidStatus) as refused:
            events(fake, auth=auth)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body) == {"message": "Authentication required"}
    with pytest.raises(InvalidStatus) as no_app:
        connect(
            f"ws://127.0.0.1:{fake.port}/ari/events",
            subprotocols=["ari"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic()},
            proxy=None,
            open_timeout=5,
        )
    assert no_app.value.response.status_code == 400
    assert fake.ws_refused == [401, 401, 401, 400]
    assert fake.connects == 0
    with events(fake, auth="", query="&api_key=ivrgw:secret") as ws:
        assert ws.subprotocol == "ari"
        fake.wait_connected()
    status, headers, body = rest(fake, "GET", "/channels", auth="")
    assert (status, body) == (401, {"message": "Authentication required"})
    assert headers["www-authenticate"] == 'Basic realm="Asterisk REST Interface"'
    assert rest(fake, "GET", "/channels", auth=basic("ivrgw", "nope"))[0] == 401
    assert rest(fake, "GET", "/channels", {"api_key": "ivrgw:secret"}, auth="")[0] == 200
    assert [c.status for c in fake.requests] == [401, 401, 200]


def test_fake_ari_events_match_the_asterisk_22_samples_byte_for_byte(
    fake: FakeAsterisk, clock: Clock
) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        clock.queue.extend([1795317851.419, 1795317851.420])
        ch = fake.originate(
            caller="",
            exten="s",
            context="ivr",
            channel_id="1795317851.2",
            name="Local/s@caller-00000001;1",
            protocol_id="",
        )
        assert ws.recv(timeout=5) == SAMPLE_START
        clock.queue.append(1795317854.123)
        ch.press("1")
        assert ws.recv(timeout=5) == SAMPLE_DTMF
    assert ari_timestamp(1795317851.419) == "2026-11-22T03:24:11.419+0000"
    assert list(fake.events_sent[0]) == [
        "type",
        "timestamp",
        "args",
        "channel",
        "asterisk_id",
        "application",
    ]


def test_fake_ari_stasis_args_and_pjsip_defaults(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, start = call(
            fake, ws, caller="13800000000", exten="4000", args=("demo", "lang=zh"), state="Ring"
        )
    assert start["args"] == ["demo", "lang=zh"]
    channel = start["channel"]
    assert channel["dialplan"] == {
        "context": "ivr",
        "exten": "4000",
        "priority": 2,
        "app_name": "Stasis",
        "app_data": "ivrgw,demo,lang=zh",
    }
    assert channel["state"] == "Ring" and channel["caller"]["number"] == "13800000000"
    assert channel["name"].startswith("PJSIP/13800000000-")
    seconds, _, counter = ch.id.partition(".")
    assert seconds.isdigit() and counter.isdigit()


def test_fake_ari_answer_then_play_a_wav_from_the_media_server(
    fake: FakeAsterisk, media: MediaServer
) -> None:
    media.files["/media/hello.wav"] = (200, "audio/wav", make_wav(1.0))
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws, state="Ring")
        assert rest(fake, "POST", f"/channels/{ch.id}/answer")[0] == 204
        change = recv(ws)
        assert change["type"] == "ChannelStateChange" and change["channel"]["state"] == "Up"
        assert ch.answered and ch.state == "Up"

        uri = "sound:" + media.url("/media/hello.wav")
        status, headers, body = rest(
            fake, "POST", f"/channels/{ch.id}/play", {"media": uri, "playbackId": "pb-1"}
        )
        assert status == 201
        assert headers["location"] == "/ari/playbacks/pb-1"
        assert json.dumps(body, separators=(",", ":")) == (
            '{"id":"pb-1","media_uri":"'
            + uri
            + '","target_uri":"channel:'
            + ch.id
            + '","language":"en","state":"queued"}'
        )
        started, finished = recv(ws), recv(ws)
    assert started["type"] == "PlaybackStarted"
    assert list(started) == ["type", "timestamp", "playback", "asterisk_id", "application"]
    assert started["playback"]["state"] == "playing"
    assert finished["type"] == "PlaybackFinished" and finished["playback"]["state"] == "done"
    pb = ch.playbacks[0]
    assert pb.state == "done" and not pb.stopped
    assert pb.finished_at is not None and pb.started_at is not None
    # One second of audio at time_scale 0.02 is 20 ms; the 40 ms floor applies.
    assert pb.finished_at - pb.started_at >= 0.035
    assert media.seen == [("/media/hello.wav", "asterisk-libcurl-agent/1.0")]
    assert fake.media_fetches[0].ext == "wav" and fake.media_fetches[0].seconds == 1.0


def test_fake_ari_caches_media_like_res_http_media_cache(
    fake: FakeAsterisk, media: MediaServer
) -> None:
    wav = make_wav(0.1)
    media.files["/fresh.wav"] = (200, "audio/wav", wav)
    media.extra["/fresh.wav"] = {"Cache-Control": "public, max-age=3600", "ETag": '"f"'}
    media.files["/revalidate.wav"] = (200, "audio/wav", wav)
    media.extra["/revalidate.wav"] = {"Cache-Control": "no-cache", "ETag": '"r"'}
    media.files["/plain.wav"] = (200, "audio/wav", wav)
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        for path in ("/fresh.wav", "/revalidate.wav", "/plain.wav") * 2:
            uri = "sound:" + media.url(path)
            assert rest(fake, "POST", f"/channels/{ch.id}/play", {"media": uri})[0] == 201
            recv_until(ws, "PlaybackFinished")
    assert ch.playbacks[-1].state == "done"
    assert media.methods == [
        ("GET", "/fresh.wav", None),
        ("GET", "/revalidate.wav", None),
        ("GET", "/plain.wav", None),
        # fresh.wav is served from the cache; revalidate.wav is checked with its ETag and
        # kept on 304; plain.wav (no caching headers, no ETag) is fetched again.
        ("HEAD", "/revalidate.wav", '"r"'),
        ("GET", "/plain.wav", None),
    ]
    assert fake.media_cache_hits == 1


def test_fake_ari_plays_several_media_in_sequence(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        status, _, body = rest(
            fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:hello-world,digits:42"}
        )
        assert status == 201 and body["next_media_uri"] == "digits:42"
        got = recv_until(ws, "PlaybackFinished")
        # A JSON body's media array means the same; a body string is one media, not split.
        status, _, body = rest(
            fake,
            "POST",
            f"/channels/{ch.id}/play/pb-json",
            body={"media": ["tone:beep", "number:7"]},
        )
        assert status == 201 and body["id"] == "pb-json"
    assert [
        (e["type"], e["playback"]["media_uri"], e["playback"].get("next_media_uri")) for e in got
    ] == [
        ("PlaybackStarted", "sound:hello-world", "digits:42"),
        ("PlaybackContinuing", "sound:hello-world", "digits:42"),
        ("PlaybackStarted", "digits:42", None),
        ("PlaybackFinished", "digits:42", None),
    ]
    assert [e["playback"]["state"] for e in got] == ["playing", "continuing", "playing", "done"]


def test_fake_ari_a_failed_media_mid_list_continues(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:/nowhere/x,digits:1"})
        got = recv_until(ws, "PlaybackFinished")
    assert [(e["type"], e["playback"]["state"]) for e in got] == [
        ("PlaybackStarted", "playing"),
        ("PlaybackContinuing", "continuing"),
        ("PlaybackStarted", "playing"),
        ("PlaybackFinished", "done"),
    ]
    assert fake.event_types(ch.id) == ["StasisStart"] + [e["type"] for e in got]
    assert fake.wait_event("PlaybackFinished")["playback"]["media_uri"] == "digits:1"


@pytest.mark.parametrize(
    ("path", "ctype", "body", "why"),
    [
        ("/missing.wav", "audio/wav", None, "server returned 404"),
        ("/wide.wav", "audio/wav", make_wav(0.2, rate=16000), "frequency mismatch 16000"),
        ("/stereo.wav", "audio/wav", make_wav(0.2, channels=2), "not in mono 2"),
        ("/page", "text/html", b"<html></html>", "no file extension"),
        ("/junk.wav", "audio/wav", b"not a riff", "not a RIFF/WAVE"),
    ],
)
def test_fake_ari_fails_media_asterisk_could_not_open(
    fake: FakeAsterisk, media: MediaServer, path: str, ctype: str, body: bytes | None, why: str
) -> None:
    if body is not None:
        media.files[path] = (200, ctype, body)
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        assert (
            rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:" + media.url(path)})[0]
            == 201
        )
        got = recv_until(ws, "PlaybackFinished")
    assert [e["type"] for e in got] == ["PlaybackStarted", "PlaybackFinished"]
    assert got[-1]["playback"]["state"] == "failed"
    assert why in ch.playbacks[0].errors[0]


def test_fake_ari_plays_16khz_only_as_wav16(
    fake: FakeAsterisk, media: MediaServer, tmp_path: Any
) -> None:
    media.files["/p.wav16"] = (200, "application/octet-stream", make_wav(0.5, rate=16000))
    (tmp_path / "prompt.wav").write_bytes(make_wav(0.5))
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        for uri in (
            "sound:" + media.url("/p.wav16"),
            f"sound:{tmp_path}/prompt",
            f"sound:{tmp_path}/prompt.wav",
        ):
            rest(fake, "POST", f"/channels/{ch.id}/play", {"media": uri})
        states = [
            e["playback"]["state"]
            for e in recv_until(ws, "PlaybackFinished")
            + recv_until(ws, "PlaybackFinished")
            + recv_until(ws, "PlaybackFinished")
            if e["type"] == "PlaybackFinished"
        ]
    # The shared-directory path must not carry the extension: Asterisk adds it.
    assert states == ["done", "done", "failed"]
    assert wav_seconds(make_wav(0.5, rate=16000), 16000) == 0.5


def test_fake_ari_stops_a_playback(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        _, _, body = rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "tone:ring"})
        assert recv(ws)["type"] == "PlaybackStarted"
        assert rest(fake, "GET", f"/playbacks/{body['id']}")[2]["state"] == "playing"
        assert rest(fake, "DELETE", f"/playbacks/{body['id']}")[0] == 204
        finished = recv(ws)
        assert finished["type"] == "PlaybackFinished" and finished["playback"]["state"] == "done"
        status, _, err = rest(fake, "DELETE", f"/playbacks/{body['id']}")
        assert (status, err) == (404, {"message": "Playback not found"})
        # digits: is not controllable: Asterisk answers 500 and lets it finish.
        _, _, body = rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "digits:123"})
        assert recv(ws)["type"] == "PlaybackStarted"
        assert rest(fake, "DELETE", f"/playbacks/{body['id']}")[0] == 500
        assert recv(ws)["playback"]["state"] == "done"
    assert ch.playbacks[0].stopped and not ch.playbacks[1].stopped


def test_fake_ari_queues_playbacks_and_cancels_a_queued_one(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        first = rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "tone:ring"})[2]
        second = rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:x"})[2]
        assert recv(ws)["playback"]["id"] == first["id"]
        assert rest(fake, "DELETE", f"/playbacks/{second['id']}")[0] == 204
        assert rest(fake, "DELETE", f"/playbacks/{first['id']}")[0] == 204
        done = [recv(ws), recv(ws)]
    assert [(e["type"], e["playback"]["id"], e["playback"]["state"]) for e in done] == [
        ("PlaybackFinished", first["id"], "done"),
        ("PlaybackFinished", second["id"], "done"),
    ]


def test_fake_ari_dtmf_does_not_stop_the_prompt(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "tone:ring"})
        assert recv(ws)["type"] == "PlaybackStarted"
        ch.press("12#", gap_ms=20)
        digits = [recv(ws) for _ in range(3)]
    assert [(e["type"], e["digit"], e["duration_ms"]) for e in digits] == [
        ("ChannelDtmfReceived", "1", 100),
        ("ChannelDtmfReceived", "2", 100),
        ("ChannelDtmfReceived", "#", 100),
    ]
    assert ch.playbacks[0].state == "playing"
    with pytest.raises(ValueError):
        ch.press("x")


def test_fake_ari_continue_leaves_stasis_after_the_prompt(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:transfer"})
        status, _, _ = rest(
            fake,
            "POST",
            f"/channels/{ch.id}/continue",
            {"context": "agents", "extension": "8001", "priority": "1"},
        )
        assert status == 204
        got = recv_until(ws, "StasisEnd")
        assert [e["type"] for e in got] == ["PlaybackStarted", "PlaybackFinished", "StasisEnd"]
        assert ch.continued_to == ("agents", "8001", 1)
        assert not ch.in_stasis and not ch.destroyed
        status, _, err = rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:x"})
        assert (status, err) == (409, {"message": "Channel not in Stasis application"})
        assert rest(fake, "GET", f"/channels/{ch.id}")[0] == 200
        # Defaults: no target is the next priority; a context alone is s@context,1.
        a, _ = call(fake, ws, exten="5000")
        b, _ = call(fake, ws, exten="5000")
        rest(fake, "POST", f"/channels/{a.id}/continue")
        rest(fake, "POST", f"/channels/{b.id}/continue", {"context": "queues"})
        recv_until(ws, "StasisEnd")
        recv_until(ws, "StasisEnd")
    assert a.continued_to == ("ivr", "5000", 3)
    assert b.continued_to == ("queues", "s", 1)


def test_fake_ari_delete_channel_order(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        status, _, err = rest(
            fake, "DELETE", f"/channels/{ch.id}", {"reason": "normal", "reason_code": "16"}
        )
        assert (status, err) == (
            400,
            {"message": "The reason and reason_code can't both be specified"},
        )
        rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "tone:ring"})
        assert recv(ws)["type"] == "PlaybackStarted"
        assert rest(fake, "DELETE", f"/channels/{ch.id}", {"reason": "normal"})[0] == 204
        got = recv_until(ws, "ChannelDestroyed")
    assert [e["type"] for e in got] == [
        "ChannelHangupRequest",
        "PlaybackFinished",
        "StasisEnd",
        "ChannelDestroyed",
    ]
    request, finished, _, destroyed = got
    # ast_softhangup() publishes the soft-hangup flag (AST_SOFTHANGUP_EXPLICIT) as the cause,
    # and channel_blob_to_json() puts the blob's keys before type and timestamp.
    assert list(request)[:5] == ["cause", "soft", "type", "timestamp", "channel"]
    assert (request["cause"], request["soft"]) == (32, True)
    assert finished["playback"]["state"] == "failed"
    assert (destroyed["cause"], destroyed["cause_txt"]) == (16, "Normal Clearing")
    assert list(destroyed)[:5] == ["type", "timestamp", "cause", "cause_txt", "channel"]
    assert ch.destroyed and ch.hangup_reason == "normal" and ch.hangup_cause == 16
    assert rest(fake, "DELETE", f"/channels/{ch.id}")[0] == 404


def test_fake_ari_caller_hangs_up(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        ch.hang_up(cause=17)
        got = recv_until(ws, "ChannelDestroyed")
    assert [e["type"] for e in got] == ["ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"]
    assert got[0]["cause"] == 17 and "soft" not in got[0]
    assert got[2]["cause_txt"] == "User busy"
    status, _, err = rest(fake, "POST", f"/channels/{ch.id}/answer")
    assert (status, err) == (404, {"message": "Channel not found"})


def test_fake_ari_not_found_and_method_errors(fake: FakeAsterisk) -> None:
    status, _, err = rest(fake, "POST", "/channels/nope/play", {"media": "sound:x"})
    assert (status, err) == (404, {"message": "Channel not found"})
    assert rest(fake, "GET", "/bridges/x/y")[0:3:2] == (404, {"message": "Resource not found"})
    assert rest(fake, "GET", "/channels/nope/answer")[0:3:2] == (405, {"message": "Invalid method"})
    assert rest(fake, "DELETE", "/playbacks/nope")[0] == 404
    assert rest(fake, "GET", "/asterisk/ping")[2]["ping"] == "pong"
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws, state="Ringing")
        assert rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:x"})[0] == 412
        up, _ = call(fake, ws)
        # No media: stasis_app_control_play_uri() refuses, and ARI says 500.
        assert rest(fake, "POST", f"/channels/{up.id}/play")[0:3:2] == (
            500,
            {"message": "Failed to queue media for playback"},
        )
        status, _, err = rest(fake, "GET", f"/channels/{ch.id}/variable", {"variable": "NOPE"})
        assert (status, err) == (404, {"message": "Provided variable was not found"})


def test_fake_ari_variables_and_redirect(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        assert (
            rest(
                fake,
                "POST",
                f"/channels/{ch.id}/variable",
                {"variable": "IVR_RESULT", "value": "agent"},
            )[0]
            == 204
        )
        varset = recv(ws)
        assert list(varset)[:4] == ["variable", "value", "type", "timestamp"]
        assert rest(fake, "GET", f"/channels/{ch.id}/variable", {"variable": "IVR_RESULT"})[2] == {
            "value": "agent"
        }
        status, _, err = rest(fake, "POST", f"/channels/{ch.id}/redirect", {"endpoint": "SIP/1001"})
        assert status == 422 and "does not match channel technology 'PJSIP'" in err["message"]
        assert (
            rest(fake, "POST", f"/channels/{ch.id}/redirect", {"endpoint": "PJSIP/1001"})[0] == 204
        )
        assert recv(ws)["type"] == "StasisEnd"
    assert ch.redirected_to == "1001" and not ch.in_stasis


def test_fake_ari_fail_next(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        fake.fail_next("POST", "/channels/*/play", 404)
        status, _, err = rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:x"})
        assert (status, err) == (404, {"message": "Channel not found"})
        assert ch.playbacks == []
        assert rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "sound:x"})[0] == 201
        assert recv(ws)["type"] == "PlaybackStarted"
    assert [c.status for c in fake.requests] == [404, 201]
    assert fake.requests[0].query == {"media": "sound:x"}


def test_fake_ari_drop_websocket_then_reconnect(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch, _ = call(fake, ws)
        rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "tone:ring"})
        assert recv(ws)["type"] == "PlaybackStarted"
        fake.drop_websocket()
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is None  # no close frame: a connection error, not a close
    assert not fake.connected
    ch.press("5")
    assert fake.events_dropped[-1]["type"] == "ChannelDtmfReceived"
    with pytest.raises(AssertionError, match="Stasis"):
        fake.originate()
    # The call stayed in Stasis with its prompt playing; events resume on the new socket.
    with events(fake) as again:
        fake.wait_connected()
        assert fake.connects == 2
        ch.press("7")
        assert recv(again)["digit"] == "7"
        assert rest(fake, "DELETE", f"/playbacks/{ch.playbacks[0].id}")[0] == 204
        assert recv(again)["type"] == "PlaybackFinished"


def test_fake_ari_second_socket_replaces_the_first(fake: FakeAsterisk) -> None:
    with events(fake) as first:
        fake.wait_connected()
        with events(fake) as second:
            replaced = recv(first)
            assert replaced == {
                "type": "ApplicationReplaced",
                "application": "ivrgw",
                "asterisk_id": "02:fc:00:00:00:01",
            }
            call(fake, second)
        # Closing the replaced socket leaves the new owner in place, until it closes too.
        fake.wait_for(lambda: not fake.connected, 5)


def test_fake_ari_stop_ends_calls_and_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    fake = FakeAsterisk()
    fake.start()
    answers: list[int] = []
    with events(fake):
        fake.wait_connected()
        ch = fake.originate()
        rest(fake, "POST", f"/channels/{ch.id}/play", {"media": "tone:ring"})
        # answer waits for its turn behind the endless tone, as a Stasis command does.
        waiting = threading.Thread(
            target=lambda: answers.append(rest(fake, "POST", f"/channels/{ch.id}/answer")[0])
        )
        waiting.start()
        fake.wait_for(lambda: len(fake.requests) == 2, 5)
        time.sleep(0.05)
        assert answers == []
        fake.stop()
        fake.stop()
        waiting.join(10)
    assert answers == [500]
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == [], left


def raw_get(fake: FakeAsterisk, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.request("GET", "/ari" + path, headers={"Authorization": basic()})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_fake_ari_snoop_channel_enters_stasis_and_records_while_a_prompt_plays(
    fake: FakeAsterisk,
) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch = fake.originate(args=["demo"], channel_id="1795317851.2")
        recv_until(ws, "StasisStart")
        status, _, snoop = rest(
            fake,
            "POST",
            "/channels/1795317851.2/snoop",
            {"spy": "both", "app": "ivrgw", "appArgs": "rec,x=1", "snoopId": "snoop-1"},
        )
        assert status == 200
        assert snoop["id"] == "snoop-1" and snoop["name"] == "Snoop/1795317851.2-00000001"
        assert snoop["state"] == "Up"
        assert snoop["dialplan"]["app_data"] == "ivrgw,rec,x=1"
        start = recv_until(ws, "StasisStart")[-1]
        assert start["args"] == ["rec", "x=1"] and start["channel"]["id"] == "snoop-1"
        query = {"name": "call-1", "format": "wav", "ifExists": "fail", "beep": "false"}
        status, headers, live = rest(fake, "POST", "/channels/snoop-1/record", query)
        assert status == 201 and headers["location"] == "/ari/recordings/live/call-1"
        assert live == {
            "name": "call-1",
            "format": "wav",
            "state": "queued",
            "target_uri": "channel:snoop-1",
        }
        started = recv_until(ws, "RecordingStarted")[-1]
        assert list(started) == ["type", "timestamp", "recording", "asterisk_id", "application"]
        assert started["recording"]["state"] == "recording"
        # The recording holds the snoop channel's control, not the caller's: a prompt plays.
        assert rest(fake, "POST", "/channels/1795317851.2/play", {"media": "digits:1"})[0] == 201
        recv_until(ws, "PlaybackFinished")
        # A second recording of the same name is refused while the first runs.
        assert rest(fake, "POST", "/channels/snoop-1/record", query)[:3:2] == (
            409,
            {"message": "Recording 'call-1' already exists and can not be overwritten"},
        )
        assert rest(fake, "GET", "/recordings/live/call-1")[2]["state"] == "recording"
        assert rest(fake, "POST", "/recordings/live/call-1/stop")[0] == 204
        finished = recv_until(ws, "RecordingFinished")[-1]["recording"]
        assert finished["state"] == "done" and finished["duration"] == 0
        assert rest(fake, "POST", "/recordings/live/call-1/stop")[2] == {
            "message": "Recording not found"
        }
        ch.hang_up()
        # The snoop channel goes when the channel it spies on does, without a hangup request.
        snoop_events = []
        while not snoop_events or snoop_events[-1] != "ChannelDestroyed":
            event = recv(ws)
            if event.get("channel", {}).get("id") == "snoop-1":
                snoop_events.append(event["type"])
        assert snoop_events == ["StasisEnd", "ChannelDestroyed"]


def test_fake_ari_stored_recordings_list_get_file_delete(fake: FakeAsterisk) -> None:
    with events(fake) as ws:
        fake.wait_connected()
        ch = fake.originate(channel_id="1795317851.3")
        query = {"name": "whole", "format": "wav"}
        assert rest(fake, "POST", "/channels/1795317851.3/record", query)[0] == 201
        recv_until(ws, "RecordingStarted")
        # Recording the channel itself holds its control: a prompt waits for it to end.
        play = {"media": "digits:1", "playbackId": "pb-1"}
        assert rest(fake, "POST", "/channels/1795317851.3/play", play)[0] == 201
        time.sleep(1.05)
        assert fake.playback("pb-1").state == "queued"
        assert rest(fake, "POST", "/recordings/live/whole/stop")[0] == 204
        events_after = recv_until(ws, "PlaybackStarted")
        finished = events_after[-2]["recording"]
        assert finished["state"] == "done" and finished["duration"] == 1
        ch.hang_up()
    assert rest(fake, "GET", "/recordings/stored")[2] == [{"name": "whole", "format": "wav"}]
    assert rest(fake, "GET", "/recordings/stored/whole")[2] == {"name": "whole", "format": "wav"}
    status, headers, data = raw_get(fake, "/recordings/stored/whole/file")
    assert status == 200 and headers["content-type"] == "audio/wav"
    assert 1.0 <= wav_seconds(data, 8000) < 1.5
    assert data == fake.stored_recordings["whole"][1]
    assert rest(fake, "DELETE", "/recordings/stored/whole")[0] == 204
    for method, path in (
        ("GET", "/recordings/stored/whole"),
        ("GET", "/recordings/stored/whole/file"),
        ("DELETE", "/recordings/stored/whole"),
    ):
        assert rest(fake, method, path)[:3:2] == (404, {"message": "Recording not found"})


def test_fake_ari_record_and_snoop_refusals(fake: FakeAsterisk) -> None:
    with events(fake):
        fake.wait_connected()
        fake.originate(channel_id="1795317851.4")
        fake.stored_recordings["taken"] = ("wav", b"RIFF")
        cases = [
            ({"name": "a", "format": "mp9"}, 422, "specified format is unknown on this system"),
            ({"name": "a", "format": "wav", "ifExists": "bad"}, 400, "ifExists invalid"),
            ({"name": "a", "format": "wav", "terminateOn": "x"}, 400, "terminateOn invalid"),
            ({"name": "a", "format": "wav", "maxDurationSeconds": "-1"}, 400, None),
            ({"name": "../a", "format": "wav"}, 400, "Recording name invalid"),
            (
                {"name": "taken", "format": "wav", "ifExists": "fail"},
                409,
                "Recording 'taken' already exists and can not be overwritten",
            ),
        ]
        for query, status, message in cases:
            got = rest(fake, "POST", "/channels/1795317851.4/record", query)
            assert got[0] == status, (query, got)
            if message:
                assert got[2] == {"message": message}
        overwrite = {"name": "taken", "format": "wav", "ifExists": "overwrite"}
        assert rest(fake, "POST", "/channels/1795317851.4/record", overwrite)[0] == 201
        assert rest(fake, "POST", "/channels/nope/record", {"name": "b", "format": "wav"})[0] == 404
        snoop = "/channels/1795317851.4/snoop"
        assert rest(fake, "POST", snoop, {"spy": "up", "app": "ivrgw"})[2] == {
            "message": "Invalid direction specified for spy"
        }
        assert rest(fake, "POST", snoop, {"app": "ivrgw"})[0] == 400
        assert rest(fake, "POST", snoop, {"spy": "in"})[2] == {
            "message": "Application name is required"
        }
        assert rest(fake, "POST", "/channels/nope/snoop", {"spy": "in", "app": "ivrgw"})[0] == 404

"""A fake Asterisk speaking ARI (events websocket + REST) on loopback, for gateway tests.

Rules of this file:
- It models Asterisk 22's ARI as the source has it (reference/pbx-protocols.md §3; res_ari.c,
  resource_channels.c, resource_playbacks.c, res_stasis_playback.c, res/stasis/app.c and
  control.c, main/stasis_channels.c, main/channel.c, format_wav.c, res_http_media_cache.c),
  not from memory. It imports nothing from gateway/ or adapters/, so it is an independent model.
- It is one raw ASGI callable served by uvicorn (websockets-sansio) in a background thread on a
  free 127.0.0.1 port. All state lives on that thread's event loop; the public methods hop onto
  the loop and wait for the result, so tests call them from the test thread.
- Events are compact JSON (`separators=(",", ":")`, non-ASCII kept, like jansson) with Asterisk's
  key order: the event's own keys, then `asterisk_id`, then `application`. Events built from a
  channel blob (ChannelHangupRequest, ChannelVarset) put the blob's keys first, then `type`,
  `timestamp` and `channel`, as `channel_blob_to_json` does. Timestamps come from `clock`
  (default time.time) as `YYYY-MM-DDTHH:MM:SS.mmm+0000`.
- One websocket owns an app at a time: a second connection for the same app takes it over and the
  first gets `ApplicationReplaced`. While no websocket owns an app its events are dropped (and
  recorded in `events_dropped`), and originate() refuses a call, as Stasis() fails.
- Each channel has a command queue run in order, as a Stasis control does: play, continue and
  set-variable are queued and answered at once; answer and redirect wait for their turn. So a
  continue sent while a prompt plays takes effect when the prompt ends. DELETE on a channel is
  a soft hangup and acts at once: the playing prompt ends `failed`, queued commands are dropped.
- Hangup events: ChannelHangupRequest, (PlaybackFinished), StasisEnd, ChannelDestroyed. For
  DELETE the request carries `{"cause":32,"soft":true}` (ast_softhangup passes the soft-hangup
  flag AST_SOFTHANGUP_EXPLICIT, not a Q.850 cause); a caller hang-up carries `{"cause":<Q.850>}`.
  The Q.850 cause and its text are in ChannelDestroyed (16, "Normal Clearing" for reason=normal).
- Playback follows play_on_channel: PlaybackStarted per media, PlaybackContinuing between media,
  PlaybackFinished (`done` or `failed`) after the last. `sound:http(s)://...` is fetched (loopback
  only) and must pass res_http_media_cache and format_wav: a 2xx, an extension from the
  Content-Type (audio/wav, audio/x-wav -> wav) or else from the URL path, and for wav a mono
  16-bit PCM RIFF at 8 kHz (wav16: 16 kHz). `sound:/abs/path` looks for path.<ext> on disk.
  Fetched media is cached per URL as res_http_media_cache does: fresh until `s-maxage`/`max-age`
  (else `Expires`, else at once); `no-cache`/`must-revalidate` always revalidate. A stale entry
  with an ETag is revalidated with a HEAD carrying `If-None-Match` (304 keeps it, refreshing its
  expiry); without an ETag, or on any other answer, it is fetched again.
  Other `sound:` names, number:, digits: and characters: last 500 ms; tone: lasts until stopped.
  Durations are scaled by `time_scale`, with `min_playback_ms` as the floor. An unknown scheme,
  `recording:` or a bad `number:` emits PlaybackStarted and nothing after it (Asterisk skips it).
- Recording follows res_stasis_recording.c, res_stasis_snoop.c, resource_recordings.c and
  stasis_recording/stored.c. `POST /channels/{id}/snoop` makes a `Snoop/<id>-<n>` channel (Up,
  200 with its snapshot) that enters Stasis(app[,appArgs]) at once; it hangs up, with no
  ChannelHangupRequest, when the channel it spies on is destroyed. `POST /channels/{id}/record`
  answers 201 with a LiveRecording (`queued`) and queues a record command on the channel, so
  commands queued after it (a play) wait until the recording ends, as record_file() holds the
  control. Running, it is `recording` (RecordingStarted); it ends on `POST
  /recordings/live/{name}/stop` or on hangup, stores a mono 16-bit 8 kHz WAV of silence as long
  as it ran (real time, whole seconds in `duration`), and emits RecordingFinished (`done`). The
  stored recordings are listed, described, served (`Content-Type: audio/<format>`) and deleted
  under /recordings/stored, with 404 `Recording not found` for an unknown name.
- A call is bounded: every wait a test does through this API has a timeout and fails loudly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import fnmatch
import io
import itertools
import json
import os
import re
import socket
import ssl
import struct
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit

import uvicorn

T = TypeVar("T")
Json = dict[str, Any]

SERVER_HEADER = b"Asterisk/22.5.2"
REALM = "Asterisk REST Interface"
CURL_USER_AGENT = "asterisk-libcurl-agent/1.0"
FIXED_MEDIA_SECONDS = 0.5
AST_SOFTHANGUP_EXPLICIT = 32
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# States in which resource_channels.c's channel_state_invalid() answers 412.
_INVALID_STATES = frozenset({"Down", "Rsrvd", "Ringing"})
# convert_reason_to_hangup_code() in resource_channels.c.
HANGUP_REASONS = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 18,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}
# ast_cause2str() for the causes above.
CAUSE_TEXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    28: "Invalid number format (addr incomplete)",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    58: "Bearer capability not available",
    127: "Interworking, unspecified",
}
# File formats by extension: bytes per second of raw audio (None: RIFF, parsed).
FORMAT_RATES: dict[str, int | None] = {
    "wav": None,
    "wav16": None,
    "sln": 16000,
    "slin": 16000,
    "raw": 16000,
    "sln12": 24000,
    "sln16": 32000,
    "sln24": 48000,
    "sln32": 64000,
    "sln44": 88200,
    "sln48": 96000,
    "sln96": 192000,
    "sln192": 384000,
    "ulaw": 8000,
    "ul": 8000,
    "mu": 8000,
    "alaw": 8000,
    "al": 8000,
    "pcm": 8000,
    "g722": 8000,
    "gsm": 1650,
    "g729": 1000,
}
# stasis_app_recording_termination_parse() and _if_exists_parse(), case-insensitive.
TERMINATE_ON = frozenset({"", "none", "any", "#", "*"})
IF_EXISTS = frozenset({"", "fail", "overwrite", "append"})
# ari_channels_handle_snoop_channel(): the directions spy and whisper accept.
SNOOP_DIRECTIONS = frozenset({"", "none", "in", "out", "both"})
# ast_get_extension_for_mime_type(): only format_wav registers MIME types we serve.
MIME_EXTENSIONS = {"audio/wav": "wav", "audio/x-wav": "wav"}


def ari_timestamp(t: float) -> str:
    """ast_json_timeval() in UTC: milliseconds truncated, `+0000` zone."""
    micros = round(t * 1_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros // 1000:03d}+0000"


def dumps(value: object) -> str:
    """Compact JSON as jansson writes it for ARI."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _c_int(text: str) -> int | None:
    """sscanf("%d"): the leading integer of a string, or None."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else None


class MediaError(Exception):
    """A media URI Asterisk could not open; the message says why."""


def wav_seconds(data: bytes, hz: int) -> float:
    """format_wav.c's header checks; the playable length of the data chunk in seconds."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError("not a RIFF/WAVE file")
    pos, fmt_seen = 12, False
    while True:
        if pos + 8 > len(data):
            raise MediaError("no data chunk")
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8
        if chunk == b"data":
            break
        if chunk == b"fmt ":
            if size < 16 or pos + 16 > len(data):
                raise MediaError(f"unexpected header size {size}")
            fmt, chans, freq, _, bysam = struct.unpack("<HHIIH", data[pos : pos + 14])
            if fmt != 1:
                raise MediaError(f"not a supported wav file format ({fmt})")
            if chans != 1:
                raise MediaError(f"not in mono {chans}")
            if freq not in (8000, 16000) or freq != hz:
                raise MediaError(f"unexpected frequency mismatch {freq} (expecting {hz})")
            if bysam != 2:
                raise MediaError(f"can only handle 16bits per sample: {bysam}")
            fmt_seen = True
        # format_wav skips chunks by their size alone: an odd chunk's pad byte misaligns it.
        pos += size
    if not fmt_seen:
        raise MediaError("no fmt chunk before data")
    if size in (0, 0xFFFFFFFF):
        raise MediaError(f"unusable data chunk size {size}")
    return min(size, len(data) - pos) / (2 * hz)


def media_seconds(ext: str, data: bytes) -> float:
    """How long a file of this format plays."""
    if ext == "wav":
        return wav_seconds(data, 8000)
    if ext == "wav16":
        return wav_seconds(data, 16000)
    rate = FORMAT_RATES.get(ext)
    if rate is None:
        raise MediaError(f"no format for extension {ext!r}")
    return len(data) / rate


def extension_for(content_type: str | None, path: str) -> str | None:
    """res_http_media_cache: the Content-Type first (as sent, then without parameters), then
    the URL path's last `.suffix` if it names a format."""
    if content_type:
        for candidate in (content_type, content_type.split(";", 1)[0].rstrip(" \t")):
            ext = MIME_EXTENSIONS.get(candidate.lower())
            if ext:
                return ext
    dot = path.rfind(".")
    if dot >= 0 and path[dot + 1 :] in FORMAT_RATES:
        return path[dot + 1 :]
    return None


@dataclass
class RestCall:
    """One REST request as the fake received and answered it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    status: int = 0
    at: float = field(default_factory=time.perf_counter)  # when it arrived


@dataclass
class MediaFetch:
    """One media request the fake made for a `sound:http...` URI (GET, or a revalidating HEAD)."""

    url: str
    method: str = "GET"
    status: int | None = None
    content_type: str | None = None
    ext: str | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class _CachedMedia:
    seconds: float
    expires: float
    etag: str | None
    always_revalidate: bool


def _expiry(headers: dict[str, str], now: float) -> float:
    """bucket_file_set_expiration: s-maxage, else max-age, else Expires, else now."""
    control = headers.get("cache-control")
    if control is not None:
        for name in ("s-maxage", "max-age"):
            at = control.find(name)
            if at >= 0:
                m = re.match(r"\s*=\s*(\d+)", control[at + len(name) :])
                return now + int(m.group(1)) if m else now
        return now
    expires = headers.get("expires")
    if expires:
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(expires).timestamp()
    return now


@dataclass(eq=False)
class FakePlayback:
    """One ARI playback: its media list and where it got to."""

    id: str
    media: list[str]
    channel_id: str
    language: str = "en"
    state: str = "queued"  # the wire state: queued, playing, continuing, done, failed
    index: int = 0
    started_at: float | None = None  # time.monotonic()
    finished_at: float | None = None
    stopped: bool = False  # a DELETE stopped (or canceled) it
    canceled: bool = False  # the DELETE came while it was still queued
    controllable: bool = False
    errors: list[str] = field(default_factory=list)
    _wake: asyncio.Event | None = field(default=None, repr=False)

    def to_json(self) -> Json:
        """stasis_app_playback_to_json()."""
        out: Json = {"id": self.id, "media_uri": self.media[self.index]}
        if self.index < len(self.media) - 1:
            out["next_media_uri"] = self.media[self.index + 1]
        out["target_uri"] = f"channel:{self.channel_id}"
        out["language"] = self.language
        out["state"] = self.state
        return out


@dataclass(eq=False)
class FakeRecording:
    """One live recording (stasis_app_recording) and how it ended."""

    name: str
    format: str
    channel_id: str
    if_exists: str = "fail"
    state: str = "queued"  # queued, recording, paused, done, failed, canceled
    duration: int | None = None  # whole seconds, once it ended
    started_at: float | None = None  # time.monotonic()
    stopped_by: str = ""  # "stop" (the REST call) or "hangup"
    _stop: asyncio.Event | None = field(default=None, repr=False)

    def to_json(self) -> Json:
        """stasis_app_recording_to_json(): name, format, state, target_uri, then duration."""
        out: Json = {
            "name": self.name,
            "format": self.format,
            "state": self.state,
            "target_uri": f"channel:{self.channel_id}",
        }
        if self.duration is not None:
            out["duration"] = self.duration
        return out


def silence_wav(seconds: float, rate: int = 8000) -> bytes:
    """What the fake stores for a recording: mono 16-bit PCM silence."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))
    return out.getvalue()


@dataclass
class _Command:
    kind: str  # play, continue, redirect, answer, setvar, record
    playback: FakePlayback | None = None
    recording: FakeRecording | None = None
    target: tuple[str, str, int] | None = None
    endpoint: str = ""
    name: str = ""
    value: str | None = None
    done: asyncio.Future[bool] | None = None  # answer/redirect wait on it


class FakeChannel:
    """A channel that entered Stasis(app[,args]) on the fake."""

    def __init__(self, fake: FakeAsterisk, **kw: Any) -> None:
        self._fake = fake
        self.id: str = kw["id"]
        self.name: str = kw["name"]
        self.state: str = kw["state"]
        self.protocol_id: str = kw["protocol_id"]
        self.caller_name: str = kw["caller_name"]
        self.caller_number: str = kw["caller_number"]
        self.context: str = kw["context"]
        self.exten: str = kw["exten"]
        self.priority: int = kw["priority"]
        self.app: str = kw["app"]
        self.args: list[str] = list(kw["args"])
        self.language: str = kw["language"]
        self.creationtime: float = kw["creationtime"]
        self.variables: dict[str, str] = dict(kw["variables"])
        self.in_stasis = True
        self.destroyed = False
        self.answered = False  # an ARI answer ran (state says whether the channel is Up)
        self.continued_to: tuple[str, str, int] | None = None
        self.redirected_to: str | None = None
        self.hangup_reason: str | None = None  # reason=..., "reason_code=N", "normal", "caller"
        self.hangup_cause: int | None = None
        self.playbacks: list[FakePlayback] = []
        self.recordings: list[FakeRecording] = []
        self.spyee: str | None = kw.get("spyee")  # a snoop channel: whom it spies on
        self.spy = ""  # a snoop channel's spy direction
        self.snoops: list[FakeChannel] = []  # snoop channels spying on this one
        self._recording: FakeRecording | None = None  # the record command running now
        self._subscribed = True
        self._done = False
        self._hanging = False
        self._commands: deque[_Command] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._current: FakePlayback | None = None

    @property
    def tech(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def app_data(self) -> str:
        return ",".join([self.app, *self.args])

    def snapshot(self) -> Json:
        """ast_channel_snapshot_to_json(), key order as Asterisk 22 sends it."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": self.protocol_id,
            "caller": {"name": self.caller_name, "number": self.caller_number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": "Stasis",
                "app_data": self.app_data,
            },
            "creationtime": ari_timestamp(self.creationtime),
            "language": self.language,
        }

    def press(self, digits: str, gap_ms: int = 100, *, wait: bool = True) -> None:
        """The caller keys digits: one ChannelDtmfReceived (duration_ms 100) per digit, with
        `gap_ms` of real time between them. wait=False returns at once."""
        bad = set(digits) - set("0123456789ABCDabcd*#")
        if bad:
            raise ValueError(f"not DTMF: {''.join(sorted(bad))}")
        self._fake._run(
            self._fake._press(self, digits.upper(), gap_ms),
            wait=wait,
            timeout=len(digits) * gap_ms / 1000 + 10,
        )

    def hang_up(self, cause: int = 16) -> None:
        """The caller hangs up: ChannelHangupRequest, (PlaybackFinished), StasisEnd,
        ChannelDestroyed. Returns once the channel is destroyed."""
        self._fake._run(self._fake._hangup(self, {"cause": cause}, cause, "caller"))

    def wait_for(self, predicate: Callable[[FakeChannel], bool], timeout: float = 10) -> None:
        """Wait until predicate(self) holds (checked on every event and REST answer, and every
        5 ms); AssertionError after `timeout` seconds."""
        self._fake.wait_for(lambda: predicate(self), timeout, repr(self))

    def __repr__(self) -> str:
        where = "destroyed" if self.destroyed else "stasis" if self.in_stasis else "dialplan"
        return f"FakeChannel({self.id} {self.name} {self.state} {where}, {len(self.playbacks)} pb)"


@dataclass(eq=False)
class _Socket:
    """One accepted events websocket."""

    apps: set[str]
    send: Callable[[Json], Awaitable[None]]
    transport: asyncio.Transport
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    dead: bool = False


@dataclass
class _Req:
    method: str
    params: dict[str, Any]
    path_vars: dict[str, str]
    body: Any


@dataclass
class _Resp:
    status: int
    body: Any = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    raw: bytes | None = None  # a file body (stored recording), sent as it is


def _error(status: int, message: str) -> _Resp:
    return _Resp(status, {"message": message})


class FakeAsterisk:
    """The fake switch. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        *,
        username: str = "ivrgw",
        password: str = "secret",
        app: str = "ivrgw",
        asterisk_id: str = "02:fc:00:00:00:01",
        time_scale: float = 0.02,
        min_playback_ms: int = 40,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username, self.password, self.app = username, password, app
        self.asterisk_id = asterisk_id
        self.time_scale, self.min_playback_ms = time_scale, min_playback_ms
        self.clock = clock  # read for every timestamp, on the server thread
        self.port = 0
        self.requests: list[RestCall] = []
        self.events_sent: list[Json] = []
        self.events_dropped: list[Json] = []
        self.media_fetches: list[MediaFetch] = []
        self.media_cache_hits = 0  # plays served from the media cache without a request
        self._changed = threading.Condition()
        self._media_cache: dict[str, _CachedMedia] = {}
        self.ws_refused: list[int] = []  # statuses of refused websocket upgrades
        self.connects = 0
        self.channels: dict[str, FakeChannel] = {}
        self.apps_registered: set[str] = set()
        self._playbacks: dict[str, FakePlayback] = {}
        # Recordings: live ones by name, and the spool of stored ones (name -> format, bytes).
        self.live_recordings: dict[str, FakeRecording] = {}
        self.stored_recordings: dict[str, tuple[str, bytes]] = {}
        self._snoop_seq = itertools.count(1)
        self._active: dict[str, _Socket] = {}
        self._sockets: set[_Socket] = set()
        self._failures: list[tuple[str, str, int, str]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._routes = self._route_table()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve on a free 127.0.0.1 port; returns once uvicorn is listening."""
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the
        # listener names its protocol. Without it Nagle holds each small event frame behind
        # the previous one's delayed ACK (~40 ms), as a real Asterisk does not.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            lifespan="off",
            ws="websockets-sansio",
            ws_ping_interval=None,
            ws_per_message_deflate=False,
            ws_ping_timeout=None,
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), daemon=True, name=f"fake-ari-{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake ARI server did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """End every call timer, close every socket, stop uvicorn and join the thread."""
        if self._thread is None or self._loop is None or self._server is None:
            return
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._server.should_exit = True
        self._thread.join(15)
        if self._thread.is_alive():
            raise RuntimeError("fake ARI thread did not stop")
        self._thread = None

    def __enter__(self) -> FakeAsterisk:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, sock: socket.socket) -> None:
        assert self._loop is not None and self._server is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            sock.close()

    async def _shutdown(self) -> None:
        for ch in self.channels.values():
            ch._hanging = True
            self._flush(ch)
            self._wake(ch)
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _run(self, coro: Coroutine[Any, Any, T], *, wait: bool = True, timeout: float = 10) -> T:
        """Run a coroutine on the server loop from the test thread."""
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("the fake ARI server is not running")

        async def tracked() -> T:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await coro
            finally:
                self._tasks.discard(task)

        future = asyncio.run_coroutine_threadsafe(tracked(), self._loop)
        if not wait:
            return None  # type: ignore[return-value]
        return future.result(timeout)

    # -- test-facing API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.app in self._active

    def wait_connected(self, timeout: float = 10) -> None:
        """Wait until an events websocket owns `app`."""
        self.wait_for(lambda: self.connected, timeout, "an events websocket")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate!r} on {self!r}")
            with self._changed:
                self._changed.wait(0.005)

    def wait_event(
        self, type_: str, where: Callable[[Json], bool] | None = None, timeout: float = 10
    ) -> Json:
        """The first event of this type written to a websocket (matching `where`)."""
        found: list[Json] = []

        def seen() -> bool:
            found[:] = [
                e
                for e in list(self.events_sent)
                if e.get("type") == type_ and (where is None or where(e))
            ]
            return bool(found)

        self.wait_for(seen, timeout, f"a {type_} event")
        return found[0]

    def event_types(self, channel_id: str | None = None) -> list[str]:
        """Types of the events sent so far (for one channel, playbacks included)."""
        out = []
        for event in list(self.events_sent):
            cid = event.get("channel", {}).get("id")
            target = event.get("playback", {}).get("target_uri", "")
            if channel_id is None or channel_id in (cid, target.partition(":")[2]):
                out.append(event["type"])
        return out

    def originate(
        self,
        *,
        caller: str = "1000",
        caller_name: str = "",
        exten: str = "s",
        context: str = "ivr",
        args: tuple[str, ...] | list[str] = (),
        state: str = "Up",
        channel_id: str | None = None,
        name: str | None = None,
        priority: int = 2,
        protocol_id: str | None = None,
        language: str = "en",
        variables: dict[str, str] | None = None,
        app: str | None = None,
    ) -> FakeChannel:
        """A call reaches `Stasis(app[,args])` at context/exten/priority: the channel is made
        and StasisStart goes out. Fails if no websocket owns the app (Stasis() would fail).
        The clock is read for the id (unless given), then creationtime, then the event."""
        return self._run(
            self._originate(
                dict(
                    caller=caller,
                    caller_name=caller_name,
                    exten=exten,
                    context=context,
                    args=list(args),
                    state=state,
                    channel_id=channel_id,
                    name=name,
                    priority=priority,
                    protocol_id=protocol_id,
                    language=language,
                    variables=variables or {},
                    app=app or self.app,
                )
            )
        )

    def drop_websocket(self, *, rst: bool = False) -> None:
        """Abort every events connection without a close frame (rst=True: send a TCP RST).
        Calls stay in Stasis and their timers keep running; their events are dropped."""

        async def drop() -> None:
            for sock in list(self._sockets):
                self._unregister(sock)
                sock.dead = True
                if rst:
                    raw = sock.transport.get_extra_info("socket")
                    if raw is not None:
                        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.transport.abort()

        self._run(drop())

    def fail_next(
        self, method: str, path_pattern: str, status: int, message: str = "Channel not found"
    ) -> None:
        """The next REST call matching method and fnmatch pattern (relative to /ari, e.g.
        "/channels/*/play") is answered `status` {"message": message} and not carried out."""
        pattern = path_pattern.removeprefix("/ari")
        self._failures.append((method.upper(), pattern, status, message))

    def playback(self, playback_id: str) -> FakePlayback:
        for ch in self.channels.values():
            for pb in ch.playbacks:
                if pb.id == playback_id:
                    return pb
        raise KeyError(playback_id)

    def __repr__(self) -> str:
        return (
            f"FakeAsterisk(port={self.port}, app={self.app}, connected={self.connected}, "
            f"channels={len(self.channels)}, requests={len(self.requests)}, "
            f"events={len(self.events_sent)}, dropped={len(self.events_dropped)})"
        )

    # -- events ----------------------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> Json:
        return {"type": type_, "timestamp": ari_timestamp(self.clock()), **fields}

    def _emit(self, app: str, message: Json, sock: _Socket | None = None) -> None:
        """app_send(): add asterisk_id, then the handler adds application, then write."""
        message["asterisk_id"] = self.asterisk_id
        message["application"] = app
        target = sock or self._active.get(app)
        if target is None or target.dead:
            self.events_dropped.append(message)
            return
        self.events_sent.append(message)
        target.queue.put_nowait(dumps(message))
        self._notify()

    def _notify(self) -> None:
        """Wake test threads waiting in wait_for: the state they watch may have changed."""
        with self._changed:
            self._changed.notify_all()

    def _emit_channel(self, ch: FakeChannel, message: Json) -> None:
        if ch._subscribed:
            self._emit(ch.app, message)

    def _emit_playback(self, ch: FakeChannel, pb: FakePlayback) -> None:
        type_ = {"playing": "PlaybackStarted", "continuing": "PlaybackContinuing"}.get(
            pb.state, "PlaybackFinished"
        )
        self._emit_channel(ch, self._event(type_, playback=pb.to_json()))

    def _channel_blob(self, ch: FakeChannel, type_: str, blob: Json) -> Json:
        """channel_blob_to_json(): the blob's keys, then type, timestamp, channel."""
        return {
            **blob,
            "type": type_,
            "timestamp": ari_timestamp(self.clock()),
            "channel": ch.snapshot(),
        }

    # -- calls -----------------------------------------------------------------------------

    async def _originate(self, kw: dict[str, Any]) -> FakeChannel:
        app = kw["app"]
        if app not in self._active:
            raise AssertionError(f"Stasis({app}) would fail: no events websocket owns {app!r}")
        seq = next(self._seq)
        cid = kw["channel_id"] or f"{int(self.clock())}.{seq}"
        if cid in self.channels:
            raise ValueError(f"channel {cid} exists")
        name = kw["name"] or f"PJSIP/{kw['caller'] or 'anonymous'}-{seq:08x}"
        protocol_id = kw["protocol_id"]
        if protocol_id is None:
            protocol_id = f"{uuid.uuid4()}@127.0.0.1" if name.startswith("PJSIP/") else ""
        ch = FakeChannel(
            self,
            id=cid,
            name=name,
            state=kw["state"],
            protocol_id=protocol_id,
            caller_name=kw["caller_name"],
            caller_number=kw["caller"],
            context=kw["context"],
            exten=kw["exten"],
            priority=kw["priority"],
            app=app,
            args=kw["args"],
            language=kw["language"],
            creationtime=self.clock(),
            variables=kw["variables"],
        )
        self.channels[cid] = ch
        self._emit_channel(
            ch, self._event("StasisStart", args=list(ch.args), channel=ch.snapshot())
        )
        return ch

    async def _press(self, ch: FakeChannel, digits: str, gap_ms: int) -> None:
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(gap_ms / 1000)
            if ch.destroyed:
                return
            self._emit_channel(
                ch,
                self._event(
                    "ChannelDtmfReceived", digit=digit, duration_ms=100, channel=ch.snapshot()
                ),
            )

    def _begin_hangup(self, ch: FakeChannel, blob: Json, cause: int, reason: str) -> bool:
        """The synchronous half of a hangup: publish the request, stop what plays, drop the
        queue. False when the channel is already going."""
        if ch._hanging or ch.destroyed:
            return False
        ch._hanging = True
        ch.hangup_cause, ch.hangup_reason = cause, reason
        self._emit_channel(ch, self._channel_blob(ch, "ChannelHangupRequest", blob))
        self._flush(ch)
        self._wake(ch)
        return True

    def _wake(self, ch: FakeChannel) -> None:
        """A hangup interrupts what the channel's control is running (a prompt, a recording)."""
        if ch._current is not None and ch._current._wake is not None:
            ch._current._wake.set()
        rec = ch._recording
        if rec is not None and rec._stop is not None:
            rec.stopped_by = rec.stopped_by or "hangup"
            rec._stop.set()

    async def _end_snoop(self, snoop: FakeChannel) -> None:
        """snoop_read() returns NULL once the spied-on channel's audiohook is gone: the snoop
        channel hangs up by itself (no hangup request), cause 0."""
        if snoop._hanging or snoop.destroyed:
            return
        snoop._hanging = True
        snoop.hangup_cause, snoop.hangup_reason = 0, "spyee gone"
        self._flush(snoop)
        self._wake(snoop)
        await self._finish_hangup(snoop)

    async def _finish_hangup(self, ch: FakeChannel) -> None:
        if ch._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(ch._worker)
        if ch.in_stasis:
            ch.in_stasis = False
            self._emit_channel(ch, self._event("StasisEnd", channel=ch.snapshot()))
        ch.destroyed = True
        cause = ch.hangup_cause or 0
        self._emit_channel(
            ch,
            self._event(
                "ChannelDestroyed",
                cause=cause,
                cause_txt=CAUSE_TEXT.get(cause, "Unknown"),
                channel=ch.snapshot(),
            ),
        )
        ch._subscribed = False
        for snoop in ch.snoops:
            self._spawn(self._end_snoop(snoop))

    async def _hangup(self, ch: FakeChannel, blob: Json, cause: int, reason: str) -> None:
        if self._begin_hangup(ch, blob, cause, reason):
            await self._finish_hangup(ch)

    def _flush(self, ch: FakeChannel) -> None:
        """control_flush_queue(): queued commands never run."""
        while ch._commands:
            cmd = ch._commands.popleft()
            if cmd.playback is not None:
                self._playbacks.pop(cmd.playback.id, None)
            if cmd.done is not None and not cmd.done.done():
                cmd.done.set_result(False)

    def _enqueue(self, ch: FakeChannel, cmd: _Command) -> bool:
        """stasis_app_send_command_async(): refused once the control is done."""
        if ch._done or ch._hanging or not ch.in_stasis:
            return False
        ch._commands.append(cmd)
        if ch._worker is None:
            ch._worker = self._spawn(self._control_loop(ch))
        return True

    async def _control_loop(self, ch: FakeChannel) -> None:
        try:
            while ch._commands and not ch._hanging:
                cmd = ch._commands.popleft()
                await self._execute(ch, cmd)
                if ch._done and not ch._hanging:
                    self._flush(ch)
                    ch.in_stasis = False
                    self._emit_channel(ch, self._event("StasisEnd", channel=ch.snapshot()))
                    ch._subscribed = False
                    break
        finally:
            ch._worker = None

    async def _execute(self, ch: FakeChannel, cmd: _Command) -> None:
        if cmd.kind == "play":
            assert cmd.playback is not None
            await self._play(ch, cmd.playback)
        elif cmd.kind == "answer":
            if ch.state != "Up":
                ch.state = "Up"
                self._emit_channel(ch, self._event("ChannelStateChange", channel=ch.snapshot()))
            ch.answered = True
        elif cmd.kind == "continue":
            ch.continued_to = cmd.target
            ch._done = True
        elif cmd.kind == "redirect":
            ch.redirected_to = cmd.endpoint
            ch._done = True
        elif cmd.kind == "record":
            assert cmd.recording is not None
            await self._record(ch, cmd.recording)
        elif cmd.kind == "setvar":
            if cmd.value is None:
                ch.variables.pop(cmd.name, None)
            else:
                ch.variables[cmd.name] = cmd.value
            self._emit_channel(
                ch,
                self._channel_blob(
                    ch, "ChannelVarset", {"variable": cmd.name, "value": cmd.value or ""}
                ),
            )
        if cmd.done is not None and not cmd.done.done():
            cmd.done.set_result(True)

    # -- playback --------------------------------------------------------------------------

    async def _play(self, ch: FakeChannel, pb: FakePlayback) -> None:
        """play_on_channel() and playback_final_update()."""
        ch._current = pb
        try:
            if pb.canceled:
                # playback_first_update() publishes the canceled state, which reads "done".
                pb.state = "done"
                self._emit_playback(ch, pb)
                return
            for index in range(len(pb.media)):
                pb.index = index
                pb.state = "playing"
                if pb.started_at is None:
                    pb.started_at = time.monotonic()
                self._emit_playback(ch, pb)
                outcome = await self._render(ch, pb, pb.media[index])
                if outcome == "skip":
                    continue
                hangup, last = ch._hanging, index == len(pb.media) - 1
                if outcome == "done":
                    pb.state = "done" if last or hangup else "continuing"
                elif pb.stopped:
                    pb.state = "done"
                else:
                    pb.state = "failed" if last or hangup else "continuing"
                self._emit_playback(ch, pb)
                if hangup or outcome == "stopped":
                    break
        finally:
            if pb.state in ("done", "failed"):
                pb.finished_at = time.monotonic()
            if self._playbacks.get(pb.id) is pb:
                del self._playbacks[pb.id]
            ch._current = None

    async def _render(self, ch: FakeChannel, pb: FakePlayback, media: str) -> str:
        """Play one media URI: "done", "failed", "stopped" or "skip" (no final update)."""
        if pb.stopped:
            return "stopped"
        if ch._hanging:
            return "failed"
        scheme, _, rest = media.partition(":")
        seconds: float | None = FIXED_MEDIA_SECONDS
        if scheme == "sound":
            pb.controllable = True
            try:
                if rest.startswith(("http://", "https://")):
                    seconds = await self._fetch_media(rest)
                elif rest.startswith("/"):
                    seconds = self._file_media(rest)
            except MediaError as exc:
                pb.errors.append(f"{media}: {exc}")
                return "failed"
        elif scheme == "tone":
            pb.controllable = True
            seconds = None
        elif scheme == "number":
            if _c_int(rest) is None:
                pb.errors.append(f"{media}: number is invalid")
                return "skip"
        elif scheme not in ("digits", "characters"):
            pb.errors.append(f"{media}: scheme is unsupported")
            return "skip"
        return await self._wait_media(ch, pb, seconds)

    async def _wait_media(self, ch: FakeChannel, pb: FakePlayback, seconds: float | None) -> str:
        if pb.stopped:
            return "stopped"
        if ch._hanging:
            return "failed"
        pb._wake = asyncio.Event()
        delay = None
        if seconds is not None:
            delay = max(self.min_playback_ms / 1000, seconds * self.time_scale)
        try:
            await asyncio.wait_for(pb._wake.wait(), delay)
        except TimeoutError:
            return "done"
        finally:
            pb._wake = None
        return "stopped" if pb.stopped and not ch._hanging else "failed"

    # -- recording -------------------------------------------------------------------------

    async def _record(self, ch: FakeChannel, rec: FakeRecording) -> None:
        """record_file(): recording until stopped or hung up, then stored and `done`."""
        ch._recording = rec
        try:
            if ch._hanging:
                # ast_auto_answer() fails on a channel being hung up.
                rec.state = "failed"
                self._emit_recording(ch, rec, "Failed to answer channel")
                return
            rec.state = "recording"
            rec.started_at = time.monotonic()
            rec._stop = asyncio.Event()
            self._emit_recording(ch, rec)
            await rec._stop.wait()
            seconds = time.monotonic() - rec.started_at
            rate = FORMAT_RATES.get(rec.format) or 16000  # raw formats: bytes of silence
            data = silence_wav(seconds) if rec.format == "wav" else bytes(int(rate * seconds))
            self.stored_recordings[rec.name] = (rec.format, data)
            rec.duration = int(seconds)
            rec.state = "done"
            self._emit_recording(ch, rec)
        finally:
            ch._recording = None
            if self.live_recordings.get(rec.name) is rec:
                del self.live_recordings[rec.name]  # recording_cleanup()
            self._notify()

    def _emit_recording(self, ch: FakeChannel, rec: FakeRecording, cause: str = "") -> None:
        """recording_publish() and recording_to_json(): the event type follows the state."""
        blob = rec.to_json()
        if cause:
            blob["cause"] = cause
        type_ = {"recording": "RecordingStarted", "failed": "RecordingFailed"}.get(
            rec.state, "RecordingFinished"
        )
        self._emit_channel(ch, self._event(type_, recording=blob))

    def _file_media(self, path: str) -> float:
        """A shared-directory prompt: Asterisk appends each format's extension itself."""
        for ext in FORMAT_RATES:
            candidate = f"{path}.{ext}"
            if os.path.isfile(candidate):
                with open(candidate, "rb") as f:
                    return media_seconds(ext, f.read())
        raise MediaError(f"no file {path}.<ext> for any format (give the path without extension)")

    async def _fetch_media(self, url: str) -> float:
        now = self.clock()
        cached = self._media_cache.get(url)
        if cached is not None:
            if now < cached.expires and not cached.always_revalidate:
                self.media_cache_hits += 1
                return cached.seconds
            if cached.etag is not None:
                head = MediaFetch(url, "HEAD")
                self.media_fetches.append(head)
                with contextlib.suppress(OSError, TimeoutError, ValueError, MediaError):
                    head.status, headers, _ = await asyncio.wait_for(
                        self._http_get(url, "HEAD", {"If-None-Match": cached.etag}), 10
                    )
                    if head.status == 304:
                        cached.expires = _expiry(headers, now)
                        return cached.seconds
            del self._media_cache[url]
        record = MediaFetch(url)
        self.media_fetches.append(record)
        try:
            status, headers, body = await asyncio.wait_for(self._http_get(url), 10)
            record.status = status
            record.content_type = headers.get("content-type")
            if status // 100 != 2:
                raise MediaError(f"server returned {status}")
            record.ext = extension_for(record.content_type, urlsplit(url).path)
            if record.ext is None:
                raise MediaError("no file extension from the Content-Type or the URL path")
            record.seconds = media_seconds(record.ext, body)
            control = headers.get("cache-control", "")
            self._media_cache[url] = _CachedMedia(
                record.seconds,
                _expiry(headers, now),
                headers.get("etag"),
                "no-cache" in control or "must-revalidate" in control,
            )
            return record.seconds
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            record.error = f"fetch failed: {exc!r}"
            raise MediaError(record.error) from exc
        except MediaError as exc:
            record.error = str(exc)
            raise

    async def _http_get(
        self, url: str, method: str = "GET", extra: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """curl as res_http_media_cache sets it up: GET (or a HEAD to revalidate), follows up
        to 8 redirects."""
        for _ in range(9):
            parts = urlsplit(url)
            host = parts.hostname or ""
            if host not in _LOOPBACK:
                raise MediaError(f"the fake fetches loopback media only, not {host!r}")
            tls = parts.scheme == "https"
            reader, writer = await asyncio.open_connection(
                host,
                parts.port or (443 if tls else 80),
                ssl=ssl.create_default_context() if tls else None,
            )
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                lines = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
                writer.write(
                    f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"User-Agent: {CURL_USER_AGENT}\r\nAccept: */*\r\n{lines}\r\n".encode()
                )
                status, headers, body = await _read_response(reader, method == "HEAD")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            if status in (301, 302, 303, 307, 308) and "location" in headers:
                url = urljoin(url, headers["location"])
                continue
            return status, headers, body
        raise MediaError("too many redirects")

    # -- ASGI ------------------------------------------------------------------------------

    async def _asgi(
        self,
        scope: Json,
        receive: Callable[[], Awaitable[Json]],
        send: Callable[[Json], Awaitable[None]],
    ) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    def _authorized(self, headers: dict[str, str], query: dict[str, str]) -> bool:
        """res_ari.c authenticate_user(): HTTP Basic, else api_key=user:password."""
        auth = headers.get("authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                user, _, password = base64.b64decode(token).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif "api_key" in query:
            user, _, password = query["api_key"].partition(":")
        else:
            return False
        return (user, password) == (self.username, self.password)

    async def _websocket(
        self,
        scope: Json,
        receive: Callable[[], Awaitable[Json]],
        send: Callable[[Json], Awaitable[None]],
    ) -> None:
        await receive()  # websocket.connect
        headers = _headers(scope)
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        offered = scope.get("subprotocols") or []
        refusal: _Resp | None = None
        if scope["path"] != "/ari/events":
            refusal = _error(404, "Resource not found")
        elif not self._authorized(headers, query):
            refusal = _error(401, "Authentication required")
            refusal.headers.append((b"www-authenticate", f'Basic realm="{REALM}"'.encode()))
        elif not query.get("app"):
            refusal = _error(400, "Missing param 'app'")
        elif offered and "ari" not in offered:
            refusal = _Resp(400, None)
        if refusal is not None:
            self.ws_refused.append(refusal.status)
            body = b"" if refusal.body is None else dumps(refusal.body).encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": refusal.status,
                    "headers": [
                        (b"server", SERVER_HEADER),
                        (b"content-type", b"application/json"),
                        *refusal.headers,
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "ari" if offered else None,
                "headers": [(b"server", SERVER_HEADER)],
            }
        )
        sock = _Socket(apps=set(), send=send, transport=send.__self__.transport)  # type: ignore[attr-defined]
        self._sockets.add(sock)
        self.connects += 1
        for app in query["app"].split(","):
            if not app:
                continue
            self.apps_registered.add(app)
            old = self._active.get(app)
            if old is not None and old is not sock:
                # app_update(): the previous owner hears it was replaced, then loses the app.
                self._emit(app, {"type": "ApplicationReplaced", "application": app}, sock=old)
                old.apps.discard(app)
            self._active[app] = sock
            sock.apps.add(app)
        writer = asyncio.get_running_loop().create_task(self._write_events(sock))
        try:
            while not sock.dead:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
        finally:
            self._unregister(sock)
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer

    async def _write_events(self, sock: _Socket) -> None:
        while True:
            text = await sock.queue.get()
            try:
                await sock.send({"type": "websocket.send", "text": text})
            except Exception:
                return

    def _unregister(self, sock: _Socket) -> None:
        self._sockets.discard(sock)
        for app in sock.apps:
            if self._active.get(app) is sock:
                del self._active[app]
        sock.apps.clear()

    async def _http(
        self,
        scope: Json,
        receive: Callable[[], Awaitable[Json]],
        send: Callable[[Json], Awaitable[None]],
    ) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = _headers(scope)
        method, path = scope["method"], scope["path"]
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        call = RestCall(method, path, query, None)
        self.requests.append(call)
        response = await self._respond(call, headers, raw)
        call.status = response.status
        self._notify()
        if response.raw is not None:
            body = response.raw
        else:
            body = b"" if response.body is None else dumps(response.body).encode()
        out = [
            (b"server", SERVER_HEADER),
            (b"date", email.utils.formatdate(usegmt=True).encode()),
            (b"cache-control", b"no-cache, no-store"),
            (b"content-length", str(len(body)).encode()),
            *response.headers,
        ]
        if response.body is not None and response.raw is None:
            out.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    async def _respond(self, call: RestCall, headers: dict[str, str], raw: bytes) -> _Resp:
        if not call.path.startswith("/ari/"):
            return _error(404, "Resource not found")
        if not self._authorized(headers, call.query):
            resp = _error(401, "Authentication required")
            resp.headers.append((b"www-authenticate", f'Basic realm="{REALM}"'.encode()))
            return resp
        if raw.strip() and headers.get("content-type", "").startswith("application/json"):
            try:
                call.json = json.loads(raw)
            except ValueError:
                return _error(400, "Error parsing request body")
        rel = call.path.removeprefix("/ari")
        if rel == "/events":
            return _Resp(426, None)
        for i, (method, pattern, status, message) in enumerate(self._failures):
            if method == call.method and fnmatch.fnmatchcase(rel, pattern):
                del self._failures[i]
                return _error(status, message)
        segments = [unquote(s) for s in rel.strip("/").split("/")]
        known = False
        for route, handlers in self._routes:
            path_vars = _match(route, segments)
            if path_vars is None:
                continue
            known = True
            handler = handlers.get(call.method)
            if handler is None:
                continue
            params: dict[str, Any] = dict(call.query)
            if isinstance(call.json, dict):
                params.update(call.json)
            return await handler(_Req(call.method, params, path_vars, call.json))
        return _error(405, "Invalid method") if known else _error(404, "Resource not found")

    # -- REST resources --------------------------------------------------------------------

    def _route_table(
        self,
    ) -> list[tuple[tuple[str, ...], dict[str, Callable[[_Req], Awaitable[_Resp]]]]]:
        return [
            (("channels",), {"GET": self._list_channels}),
            (
                ("channels", "{channelId}"),
                {"GET": self._get_channel, "DELETE": self._delete_channel},
            ),
            (("channels", "{channelId}", "answer"), {"POST": self._answer}),
            (("channels", "{channelId}", "play"), {"POST": self._play_request}),
            (("channels", "{channelId}", "play", "{playbackId}"), {"POST": self._play_request}),
            (("channels", "{channelId}", "continue"), {"POST": self._continue}),
            (("channels", "{channelId}", "redirect"), {"POST": self._redirect}),
            (
                ("channels", "{channelId}", "variable"),
                {"GET": self._get_var, "POST": self._set_var},
            ),
            (
                ("playbacks", "{playbackId}"),
                {"GET": self._get_playback, "DELETE": self._stop_playback},
            ),
            (("channels", "{channelId}", "snoop"), {"POST": self._snoop}),
            (("channels", "{channelId}", "snoop", "{snoopId}"), {"POST": self._snoop}),
            (("channels", "{channelId}", "record"), {"POST": self._record_request}),
            (("recordings", "stored"), {"GET": self._list_stored}),
            (
                ("recordings", "stored", "{recordingName}"),
                {"GET": self._get_stored, "DELETE": self._delete_stored},
            ),
            (("recordings", "stored", "{recordingName}", "file"), {"GET": self._stored_file}),
            (("recordings", "live", "{recordingName}"), {"GET": self._get_live}),
            (("recordings", "live", "{recordingName}", "stop"), {"POST": self._stop_live}),
            (("applications",), {"GET": self._list_apps}),
            (("applications", "{applicationName}"), {"GET": self._get_app}),
            (("asterisk", "ping"), {"GET": self._ping}),
        ]

    def _live(self, channel_id: str) -> FakeChannel | None:
        ch = self.channels.get(channel_id)
        return None if ch is None or ch.destroyed else ch

    def _control(self, channel_id: str, *, state_check: bool = True) -> FakeChannel | _Resp:
        """find_control() then channel_state_invalid()."""
        ch = self._live(channel_id)
        if ch is None:
            return _error(404, "Channel not found")
        if not ch.in_stasis:
            return _error(409, "Channel not in Stasis application")
        if state_check and ch.state in _INVALID_STATES:
            return _error(412, "Channel in invalid state")
        return ch

    async def _list_channels(self, req: _Req) -> _Resp:
        return _Resp(200, [ch.snapshot() for ch in self.channels.values() if not ch.destroyed])

    async def _get_channel(self, req: _Req) -> _Resp:
        ch = self._live(req.path_vars["channelId"])
        return _Resp(200, ch.snapshot()) if ch else _error(404, "Channel not found")

    async def _delete_channel(self, req: _Req) -> _Resp:
        ch = self._live(req.path_vars["channelId"])
        if ch is None:
            return _error(404, "Channel not found")
        reason, code = str(req.params.get("reason", "")), str(req.params.get("reason_code", ""))
        if reason and code:
            return _error(400, "The reason and reason_code can't both be specified")
        if code:
            cause = _c_int(code)
            if cause is None:
                return _error(400, "Invalid reason for hangup reason code provided")
            label = f"reason_code={cause}"
        elif reason:
            if reason not in HANGUP_REASONS:
                return _error(400, "Invalid reason for hangup reason provided")
            cause, label = HANGUP_REASONS[reason], reason
        else:
            cause, label = 16, "normal"
        # ast_softhangup(chan, AST_SOFTHANGUP_EXPLICIT) publishes {cause: 32, soft: true}.
        if self._begin_hangup(ch, {"cause": AST_SOFTHANGUP_EXPLICIT, "soft": True}, cause, label):
            self._spawn(self._finish_hangup(ch))
        return _Resp(204)

    async def _answer(self, req: _Req) -> _Resp:
        ch = self._control(req.path_vars["channelId"])
        if isinstance(ch, _Resp):
            return ch
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self._enqueue(ch, _Command("answer", done=done)) or not await done:
            return _error(500, "Failed to answer channel")
        return _Resp(204)

    async def _play_request(self, req: _Req) -> _Resp:
        ch = self._control(req.path_vars["channelId"])
        if isinstance(ch, _Resp):
            return ch
        if (_c_int(str(req.params.get("skipms", "0"))) or 0) < 0:
            return _error(400, "skipms cannot be negative")
        if (_c_int(str(req.params.get("offsetms", "0"))) or 0) < 0:
            return _error(400, "offsetms cannot be negative")
        media = _media_list(req)
        if not media or any(not m for m in media):
            return _error(500, "Failed to queue media for playback")
        pb_id = req.path_vars.get("playbackId") or str(req.params.get("playbackId") or "")
        pb = FakePlayback(
            id=pb_id or str(uuid.uuid4()),
            media=media,
            channel_id=ch.id,
            language=str(req.params.get("lang") or ch.language),
        )
        body = pb.to_json()
        if not self._enqueue(ch, _Command("play", playback=pb)):
            return _error(500, "Failed to queue media for playback")
        ch.playbacks.append(pb)
        self._playbacks[pb.id] = pb
        return _Resp(201, body, [(b"location", f"/ari/playbacks/{pb.id}".encode())])

    async def _continue(self, req: _Req) -> _Resp:
        ch = self._control(req.path_vars["channelId"])
        if isinstance(ch, _Resp):
            return ch
        context = str(req.params.get("context") or "")
        extension = str(req.params.get("extension") or "")
        label = str(req.params.get("label") or "")
        if context:
            exten = extension or "s"
        else:
            context, exten = ch.context, extension or ch.exten
        priority = _c_int(str(req.params.get("priority", "0"))) or 0
        if label:
            number = _c_int(label)
            if number is None:
                return _error(404, "Requested label can not be found")
            if number == 0:
                return _error(400, "Requested priority is illegal")
            priority = number
        elif priority <= 0:
            no_target = not req.params.get("context") and not extension
            priority = ch.priority + 1 if no_target else 1
        self._enqueue(ch, _Command("continue", target=(context, exten, priority)))
        return _Resp(204)

    async def _redirect(self, req: _Req) -> _Resp:
        ch = self._control(req.path_vars["channelId"])
        if isinstance(ch, _Resp):
            return ch
        endpoint = str(req.params.get("endpoint") or "")
        if not endpoint:
            return _error(400, "Required parameter 'endpoint' not provided.")
        tech, slash, resource = endpoint.partition("/")
        if not slash or not tech:
            return _error(422, f"Endpoint parameter '{endpoint}' does not contain tech/resource")
        if not resource:
            return _error(422, f"No resource provided in endpoint parameter '{endpoint}'")
        if ch.tech[: len(tech)].lower() != tech.lower():
            return _error(
                422, f"Endpoint technology '{tech}' does not match channel technology '{ch.tech}'"
            )
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if (
            not self._enqueue(ch, _Command("redirect", endpoint=resource, done=done))
            or not await done
        ):
            return _error(500, "Failed to redirect channel")
        return _Resp(204)

    async def _get_var(self, req: _Req) -> _Resp:
        name = str(req.params.get("variable") or "")
        if not name:
            return _error(400, "Variable name is required")
        ch = self._live(req.path_vars["channelId"])
        if ch is None:
            return _error(404, "Provided channel was not found")
        if name.endswith(")"):
            return _error(500, "Unable to read provided function")
        if name not in ch.variables:
            return _error(404, "Provided variable was not found")
        return _Resp(200, {"value": ch.variables[name]})

    async def _set_var(self, req: _Req) -> _Resp:
        name = str(req.params.get("variable") or "")
        if not name:
            return _error(400, "Variable name is required")
        ch = self._control(req.path_vars["channelId"], state_check=False)
        if isinstance(ch, _Resp):
            return ch
        value = req.params.get("value")
        if not self._enqueue(
            ch, _Command("setvar", name=name, value=None if value is None else str(value))
        ):
            return _error(400, "Failed to execute function")
        return _Resp(204)

    async def _get_playback(self, req: _Req) -> _Resp:
        pb = self._playbacks.get(req.path_vars["playbackId"])
        return _Resp(200, pb.to_json()) if pb else _error(404, "Playback not found")

    async def _stop_playback(self, req: _Req) -> _Resp:
        """stasis_app_playback_operation(STOP) by the playback's state."""
        pb = self._playbacks.get(req.path_vars["playbackId"])
        if pb is None:
            return _error(404, "Playback not found")
        if pb.state == "queued":
            pb.canceled = pb.stopped = True
        elif pb.state in ("playing", "continuing"):
            if not pb.controllable:
                return _error(500, "Could not stop playback")
            pb.stopped = True
            if pb._wake is not None:
                pb._wake.set()
        return _Resp(204)

    async def _snoop(self, req: _Req) -> _Resp:
        """ari_channels_handle_snoop_channel() and stasis_app_control_snoop()."""
        spy = str(req.params.get("spy") or "")
        whisper = str(req.params.get("whisper") or "")
        if spy not in SNOOP_DIRECTIONS:
            return _error(400, "Invalid direction specified for spy")
        if whisper not in SNOOP_DIRECTIONS:
            return _error(400, "Invalid direction specified for whisper")
        app = str(req.params.get("app") or "")
        if spy in ("", "none") and whisper in ("", "none"):
            return _error(400, "Direction must be specified for at least spy or whisper")
        if not app:
            return _error(400, "Application name is required")
        spyee = self._live(req.path_vars["channelId"])
        if spyee is None:
            return _error(404, "Provided channel was not found")
        snoop_id = req.path_vars.get("snoopId") or str(req.params.get("snoopId") or "")
        snoop_id = snoop_id or f"{int(self.clock())}.{next(self._seq)}"
        if snoop_id in self.channels:
            # ast_channel_alloc() refuses a unique id in use.
            return _error(500, "Snoop channel could not be created")
        app_args = str(req.params.get("appArgs") or "")
        snoop = FakeChannel(
            self,
            id=snoop_id,
            name=f"Snoop/{spyee.id}-{next(self._snoop_seq):08x}",
            state="Up",
            protocol_id="",
            caller_name="",
            caller_number="",
            context="default",
            exten="s",
            priority=1,
            app=app,
            args=app_args.split(",") if app_args else [],
            language="en",
            creationtime=self.clock(),
            variables={},
            spyee=spyee.id,
        )
        snoop.spy = spy
        self.channels[snoop_id] = snoop
        spyee.snoops.append(snoop)
        if app in self._active:
            self._emit_channel(
                snoop, self._event("StasisStart", args=list(snoop.args), channel=snoop.snapshot())
            )
        else:
            # Stasis() fails in the snoop's thread, which then hangs the channel up.
            snoop.in_stasis, snoop.destroyed, snoop._subscribed = False, True, False
        return _Resp(200, snoop.snapshot())

    async def _record_request(self, req: _Req) -> _Resp:
        """ast_ari_channels_record() and stasis_app_control_record(), checks in their order."""
        if (_c_int(str(req.params.get("maxDurationSeconds", "0"))) or 0) < 0:
            return _error(400, "max_duration_seconds cannot be negative")
        if (_c_int(str(req.params.get("maxSilenceSeconds", "0"))) or 0) < 0:
            return _error(400, "max_silence_seconds cannot be negative")
        ch = self._control(req.path_vars["channelId"], state_check=False)
        if isinstance(ch, _Resp):
            return ch
        name = str(req.params.get("name") or "")
        fmt = str(req.params.get("format") or "")
        if str(req.params.get("terminateOn") or "").lower() not in TERMINATE_ON:
            return _error(400, "terminateOn invalid")
        if_exists = str(req.params.get("ifExists") or "").lower()
        if if_exists not in IF_EXISTS:
            return _error(400, "ifExists invalid")
        if fmt not in FORMAT_RATES:
            return _error(422, "specified format is unknown on this system")
        if not name:
            return _error(500, "Error parsing request")
        if name.startswith("/") or ".." in name.split("/"):
            # ast_safe_mkdir() refuses a path outside the recording directory (EPERM).
            return _error(400, "Recording name invalid")
        # An existing file with ifExists=fail, or a live recording of that name: EEXIST.
        if (if_exists in ("", "fail") and name in self.stored_recordings) or (
            name in self.live_recordings
        ):
            return _error(409, f"Recording '{name}' already exists and can not be overwritten")
        rec = FakeRecording(name, fmt, ch.id, if_exists or "fail")
        self.live_recordings[name] = rec
        ch.recordings.append(rec)
        body = rec.to_json()
        if not self._enqueue(ch, _Command("record", recording=rec)):
            # stasis_app_send_command_async() on a finished control: cleaned up at once.
            del self.live_recordings[name]
        location = f"/ari/recordings/live/{quote(name, safe='')}".encode()
        return _Resp(201, body, [(b"location", location)])

    async def _list_stored(self, req: _Req) -> _Resp:
        return _Resp(
            200, [{"name": n, "format": f} for n, (f, _) in sorted(self.stored_recordings.items())]
        )

    async def _get_stored(self, req: _Req) -> _Resp:
        stored = self.stored_recordings.get(req.path_vars["recordingName"])
        if stored is None:
            return _error(404, "Recording not found")
        return _Resp(200, {"name": req.path_vars["recordingName"], "format": stored[0]})

    async def _stored_file(self, req: _Req) -> _Resp:
        """ast_ari_recordings_get_stored_file(): the file as it is, `audio/<extension>`."""
        stored = self.stored_recordings.get(req.path_vars["recordingName"])
        if stored is None:
            return _error(404, "Recording not found")
        fmt, data = stored
        return _Resp(200, None, [(b"content-type", f"audio/{fmt}".encode())], raw=data)

    async def _delete_stored(self, req: _Req) -> _Resp:
        if self.stored_recordings.pop(req.path_vars["recordingName"], None) is None:
            return _error(404, "Recording not found")
        return _Resp(204)

    async def _get_live(self, req: _Req) -> _Resp:
        rec = self.live_recordings.get(req.path_vars["recordingName"])
        return _Resp(200, rec.to_json()) if rec else _error(404, "Recording not found")

    async def _stop_live(self, req: _Req) -> _Resp:
        """stasis_app_recording_operation(STOP) by the recording's state."""
        rec = self.live_recordings.get(req.path_vars["recordingName"])
        if rec is None:
            return _error(404, "Recording not found")
        if rec.state == "queued":
            rec.state = "canceled"  # recording_disregard(): the command still runs later
        elif rec.state in ("recording", "paused"):
            rec.state = "done"
            rec.stopped_by = "stop"
            if rec._stop is not None:
                rec._stop.set()
        else:
            return _error(409, "Recording not in session")
        return _Resp(204)

    def _app_json(self, name: str) -> Json:
        ids = [ch.id for ch in self.channels.values() if ch.app == name and ch._subscribed]
        return {
            "name": name,
            "channel_ids": ids,
            "bridge_ids": [],
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [],
            "events_disallowed": [],
        }

    async def _list_apps(self, req: _Req) -> _Resp:
        return _Resp(200, [self._app_json(name) for name in sorted(self.apps_registered)])

    async def _get_app(self, req: _Req) -> _Resp:
        name = req.path_vars["applicationName"]
        if name not in self.apps_registered:
            return _error(404, "Application not found")
        return _Resp(200, self._app_json(name))

    async def _ping(self, req: _Req) -> _Resp:
        return _Resp(
            200,
            {
                "asterisk_id": self.asterisk_id,
                "ping": "pong",
                "timestamp": ari_timestamp(self.clock()),
            },
        )


def _headers(scope: Json) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _match(route: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(route) != len(segments):
        return None
    out = {}
    for part, seg in zip(route, segments, strict=True):
        if part.startswith("{"):
            if not seg:
                return None
            out[part[1:-1]] = seg
        elif part != seg:
            return None
    return out


def _media_list(req: _Req) -> list[str]:
    """The generated ARI parser: a JSON body's `media` (an array, or one string taken whole)
    wins over the query string's, which is split at commas."""
    if isinstance(req.body, dict) and "media" in req.body:
        value = req.body["media"]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    value = req.params.get("media")
    if value is None:
        return []
    return [""] if value == "" else str(value).split(",")


async def _read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    if head_only or status < 200 or status in (204, 304):
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, headers, body
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    return status, headers, await reader.read()

"""A fake FreeSWITCH that plays mod_httapi's side of a call against an HTTP server on loopback.

Rules of this file:
- It models mod_httapi as FreeSWITCH's source has it (reference/pbx-protocols.md §1, §6 and the
  §7 capture; mod_httapi.c, switch_event.c, switch_ivr_async.c's digit machine), not the prose
  docs. It imports nothing from gateway/ or adapters/: only the standard library, so it is an
  independent model of the switch. Where it simplifies, the docstring on that piece says so.
- Requests are written byte for byte on a fresh socket per request (mod_httapi creates and
  cleans up a curl handle per request): request line, `Host`, `Authorization` (Basic, with
  credentials), `User-Agent: mod_httapi/1.0`, `Accept: */*`, an empty `Cookie:`, then for a body
  `Content-Length` and `Content-Type`. GET carries every field in the query string; a `method`
  param equal to post (any case) sends an url-encoded body instead, and the method is written
  exactly as the param spells it (libcurl's CURLOPT_CUSTOMREQUEST). A pending `attach_file:`
  (a `<recordCall>` upload) makes it a multipart/form-data POST with no query string.
- Fields are a list with unique, case-insensitive names (an EF_UNIQ_HEADERS event): setting a
  name removes the old entry and appends the new one at the end, an empty value deletes it, and
  `session_id` is put first on every request. Persistent params: the dialplan's `{k=v}` (`url`
  first), `hostname`, the Caller-* profile, then whatever `<params>` and `action=` set. Once-only
  fields (input results, `temp-action`'s url, `exiting`) go out on the next request only.
- A response must be 200 with a Content-Type containing text/xml; anything else, a body of 1 MiB
  or more, unparsable XML, an unknown tag, an empty `<work>` or a tag failing ends the httapi app
  (outcome "exit"). The call then hangs up and the exiting request goes out, as at the end of any
  call. The exiting request's answer is recorded and otherwise ignored.
- A call is bounded: more than `max_requests` requests or `timeout` seconds raises AssertionError
  carrying the call log, so a looping or stuck server fails its test instead of hanging it.
- It only ever talks to 127.0.0.1/localhost; any other host is a test bug and raises.
"""

from __future__ import annotations

import base64
import io
import re
import socket
import time
import uuid
import wave
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

# mod_httapi's response cap (HTTAPI_MAX_API_BYTES): a body of this size or more is an error.
MAX_BODY = 1024 * 1024
# libcurl hands the body to mod_httapi's write callback in pieces of at most this size.
CURL_MAX_WRITE = 16384
# switch_ivr_async.c: a regex bind lets the digit machine take up to 511 digits.
DMACHINE_MAX_DIGITS = 511
_UNSAFE = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_UNSET_STAMPS = (
    "Progress-Time",
    "Progress-Media-Time",
    "Hangup-Time",
    "Transfer-Time",
    "Resurrect-Time",
    "Bridged-Time",
    "Last-Hold",
    "Hold-Accum",
)


def httapi_encode(value: str) -> str:
    """switch_url_encode: the unsafe set, control bytes and non-ASCII (UTF-8) as %XX; `/` stays."""
    return "".join(
        f"%{b:02X}" if b < 0x20 or b > 0x7E or b in _UNSAFE else chr(b) for b in value.encode()
    )


def _wav(seconds: float = 0.25) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * int(8000 * seconds))
    return out.getvalue()


RECORDING = _wav()  # what a `<recordCall>` upload carries: 0.25 s of 8 kHz silence


# --- the caller -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digits:
    """The caller keys these DTMF digits in one go, then waits."""

    digits: str


@dataclass(frozen=True, slots=True)
class Speech:
    """The caller says `text`; heard only by a `<playback>` with asr-engine and asr-grammar."""

    text: str
    confidence: float = 0.9
    form: Literal["nlsml", "pocketsphinx", "plain"] = "nlsml"


@dataclass(frozen=True, slots=True)
class Silence:
    """The caller does nothing until the input timeout passes."""


Input = Digits | Speech | Silence


@dataclass
class Caller:
    """What the caller does at each input attempt, in order; Silence once the script runs out."""

    script: list[Input] = field(default_factory=list)


def recognizer_result(speech: Speech, grammar: str) -> str:
    """The body an ASR module hands back: unimrcp's NLSML, mod_pocketsphinx's XML, or plain text."""
    text, g = escape(speech.text), escape(grammar, {'"': "&quot;"})
    if speech.form == "nlsml":
        return (
            f'<?xml version="1.0"?><result><interpretation grammar="{g}" '
            f'confidence="{speech.confidence:.2f}"><instance>{text}</instance>'
            f'<input mode="speech">{text}</input></interpretation></result>'
        )
    if speech.form == "pocketsphinx":
        return (
            f'<result grammar="{g}"><interpretation grammar="{g}" '
            f'confidence="{round(speech.confidence * 100)}"><input mode="speech">{text}</input>'
            "</interpretation></result>"
        )
    return speech.text


# --- the call log -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One request exactly as written on the wire, with the fields it carried (decoded)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    fields: tuple[tuple[str, str], ...]
    url: str
    raw: bytes = field(repr=False)

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.fields if n == name), None)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.fields]

    @property
    def form(self) -> dict[str, str]:
        return dict(self.fields)

    @property
    def exiting(self) -> bool:
        return self.get("exiting") == "true"


@dataclass(frozen=True, slots=True)
class Received:
    """One response; status 0 when there was none (connection refused, bad URL)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    error: str = ""
    pieces: tuple[bytes, ...] = field(default=(), repr=False)  # as curl's write callback saw it

    @property
    def content_type(self) -> str | None:
        return next((v for n, v in self.headers if n.lower() == "content-type"), None)


@dataclass(frozen=True, slots=True)
class Heard:
    """A prompt the caller heard; `interruptible` when the prompt tag itself took input."""

    kind: Literal["speak", "say", "playback", "error-file"]
    text: str  # the spoken text, or the file played
    interruptible: bool
    engine: str | None = None
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Offered:
    """One input attempt: what the caller did and what it posted.

    `during_prompt` is True when the binds sat on the prompt tag (input could cut the prompt
    short), False for a `<pause>` with binds (input only after the prompt).
    """

    tag: str
    name: str
    attempt: int
    attempts: int
    during_prompt: bool
    input: Input
    result: Literal["dtmf", "speech", "invalid", "none"]
    value: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """Something the switch would log: `<log>`, an ignored attribute, an executed application."""

    text: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the httapi app ended: hangup, dial (transfer), execute, or exit (the dialplan goes on)."""

    kind: Literal["hangup", "dial", "execute", "exit"]
    cause: str | None = None
    extension: str | None = None
    application: str | None = None
    data: str | None = None
    reason: str = ""
    by_caller: bool = False


Event = Sent | Received | Heard | Offered | Note | Outcome


@dataclass
class CallLog:
    """Everything that happened in one call, in order."""

    events: list[Event] = field(default_factory=list)
    unused: list[Input] = field(default_factory=list)  # script left over at hangup

    @property
    def requests(self) -> list[Sent]:
        return [e for e in self.events if isinstance(e, Sent)]

    @property
    def responses(self) -> list[Received]:
        return [e for e in self.events if isinstance(e, Received)]

    @property
    def heard(self) -> list[Heard]:
        return [e for e in self.events if isinstance(e, Heard)]

    @property
    def prompts(self) -> list[str]:
        return [h.text for h in self.heard]

    @property
    def inputs(self) -> list[Offered]:
        return [e for e in self.events if isinstance(e, Offered)]

    @property
    def notes(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Note)]

    @property
    def outcome(self) -> Outcome | None:
        return next((e for e in self.events if isinstance(e, Outcome)), None)

    @property
    def turns(self) -> list[Sent]:
        """The requests before the call ended (everything but the exiting request)."""
        return [r for r in self.requests if not r.exiting]

    @property
    def exiting(self) -> Sent | None:
        return next((r for r in reversed(self.requests) if r.exiting), None)

    def format(self) -> str:
        lines = []
        for e in self.events:
            if isinstance(e, Sent):
                own = [f"{n}={v[:80]}" for n, v in e.fields if not n.startswith("Caller-")]
                path = e.target.split("?", 1)[0]
                lines.append(f"-> {e.method} {path} {' '.join(own[1:])}")  # all but session_id
            elif isinstance(e, Received):
                lines.append(f"<- {e.status} {e.content_type} {e.body[:400]!r} {e.error}")
            elif isinstance(e, Heard):
                lines.append(f"   heard {e.kind}: {e.text!r}{' (interruptible)' * e.interruptible}")
            elif isinstance(e, Offered):
                lines.append(
                    f"   input {e.tag} {e.attempt}/{e.attempts}: {e.input} -> {e.result} {e.value!r}"
                )
            elif isinstance(e, Note):
                lines.append(f"   note: {e.text}")
            else:
                lines.append(f"== {e}")
        return "\n".join(lines)


# --- fields and the digit machine --------------------------------------------------------------


class _Fields:
    """An ordered name/value list with unique, case-insensitive names (EF_UNIQ_HEADERS)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self.items = list(items or [])

    def set(self, name: str, value: str, *, top: bool = False) -> None:
        self.items = [(n, v) for n, v in self.items if n.lower() != name.lower()]
        if not value:  # an empty value only deletes (switch_event_base_add_header)
            return
        if top:
            self.items.insert(0, (name, value))
        else:
            self.items.append((name, value))

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.items if n.lower() == name.lower()), None)

    def copy(self) -> _Fields:
        return _Fields(self.items)


@dataclass(slots=True)
class _Bind:
    expr: str  # without the leading ~ of a regex
    regex: re.Pattern[str] | None
    is_regex: bool
    action: str | None
    strip: str | None
    parent_action: str | None  # the tag's action, used when the bind has none
    rmatch: int = 0


class _DigitMachine:
    """switch_ivr_dmachine as mod_httapi sets it up: one realm, its binds, optional terminators.

    `feed` is one DTMF digit, `expire` the digit timeout passing; both answer "found",
    "break" (no bind can match: the nomatch callback) or "pending". Matching follows
    switch_ivr_dmachine_check_match: a regex that is the only bind matches as soon as it
    matches; an exact bind matches at once when no other bind could still match, else when the
    digit timeout passes; several regexes match only at the timeout; a terminator ends input.
    """

    def __init__(self, binds: list[ET.Element], terminators: str, action: str | None) -> None:
        self.binds: list[_Bind] = []
        self.max_len = 0
        self.terminators = terminators
        self.digits = ""
        self.count = 0
        self.found: tuple[_Bind, str] | None = None
        for el in binds:
            text, act, strip = el.text or "", el.get("action"), el.get("strip")
            same = next(
                (b for b in self.binds if (b.is_regex and b.expr == text[1:]) or b.expr == text),
                None,
            )
            if same:  # "Reuse Existing": the later bind's action and strip win
                same.action, same.strip = act, strip
                continue
            is_regex = text.startswith("~")
            expr = text[1:] if is_regex else text
            try:
                pattern = re.compile(expr) if is_regex else None
            except re.error:
                pattern = re.compile(r"(?!)")  # a regex that does not compile never matches
            self.binds.append(_Bind(expr, pattern, is_regex, act, strip, action))
            if is_regex:
                self.max_len = DMACHINE_MAX_DIGITS
            elif len(expr) > self.max_len:
                self.max_len = len(expr)

    def _check(self, timeout: bool) -> str:
        if not self.count:
            return "none"
        pmatches = ematches = rmatches = 0
        for b in self.binds:
            if b.regex is not None:
                b.rmatch = b.rmatch + 1 if b.regex.search(self.digits) else 0
                rmatches += 1
                pmatches += 1
            elif b.expr.startswith(self.digits):
                pmatches += 1
                ematches = 1
        for t in self.terminators:
            if (q := self.digits.rfind(t)) >= 0:
                self.digits = self.digits[:q]
                timeout = True
                break
        best, exact, partial, both = "none", None, None, None
        for b in self.binds:
            if b.regex is not None:
                if b.rmatch:
                    if timeout or len(self.binds) == 1:
                        best, exact = "exact", b
                        break
                    best = "partial"
                continue
            pmatch = b.expr.startswith(self.digits)
            ok = ((pmatches == 1 or ematches == 1) and not rmatches) or timeout
            if exact is None and pmatch and ok and b.expr == self.digits:
                best, exact = "exact", b
                if self.count == self.max_len:
                    break
            if not (both and partial) and len(b.expr) != len(self.digits) and pmatch:
                if exact:
                    best, both = "both", b
                else:
                    best, partial = "partial", b
            if both and exact and partial:
                break
        if not pmatches:
            best = "never"
        chosen = (exact or both) if timeout and both else None
        if best == "exact" and exact:
            chosen = exact
        if chosen:
            self.found = (chosen, self.digits)
            best = "exact"
        return best

    def _ping(self, timeout: bool) -> str:
        best = self._check(timeout)
        timeout = timeout or best == "never"
        if not self.digits and not timeout:
            return "pending"
        if self.count > self.max_len:
            result = "break"
        elif best == "exact" or (best == "both" and timeout):
            result = "found"
        elif timeout or (best == "none" and self.count == self.max_len):
            result = "break"
        else:
            return "pending"
        self.digits, self.count = "", 0
        return result

    def feed(self, digit: str) -> str:
        if self.count >= self.max_len:
            return "overflow"
        self.digits += digit
        self.count += 1
        return self._ping(False)

    def expire(self) -> str:
        return self._ping(True) if self.count else "break"


def _body(el: ET.Element) -> str:
    """An element's own character data, as ezxml's `txt` has it (children's text excluded)."""
    return (el.text or "") + "".join(child.tail or "" for child in el)


def _strip(digits: str, strip: str | None) -> str:
    """A bind's strip: the digits cut at the first occurrence of each listed character."""
    for c in strip or "":
        if (p := digits.find(c)) >= 0:
            digits = digits[:p]
    return digits


def _atoi(value: str | None) -> int:
    m = re.match(r"\s*([+-]?\d+)", value or "")
    return int(m.group(1)) if m else 0


# --- the switch ---------------------------------------------------------------------------------


class FakeFreeSwitch:
    """mod_httapi on one channel, pointed at `http://host:port{path}` with the dialplan's params.

    The profile modelled is the one docs/freeswitch.md recommends: set-params and dial on,
    execute-apps limited to `apps`, set-vars, get-vars, expand-vars, extended-data, the
    dial-set-* permissions and conference off.

    `error_file=True` is a test knob, not FreeSWITCH behaviour: input tags without an
    `error-file` attribute act as if they had one, so a failed attempt posts `invalid`
    (each use is logged as a Note).
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        path: str = "/freeswitch/httapi",
        params: Mapping[str, str] | None = None,
        method: Literal["GET", "POST"] = "GET",
        caller_number: str = "1000",
        caller_name: str = "SmokeTest",
        destination: str = "5000",
        session_id: str | None = None,
        hostname: str = "vm",
        created_us: int | None = None,
        credentials: tuple[str, str] | None = None,
        error_file: bool = False,
        apps: Collection[str] = ("transfer", "hangup"),
        dial: bool = True,
        set_params: bool = True,
        max_requests: int = 50,
        timeout: float = 10.0,
    ) -> None:
        self.url = f"http://{host}:{port}{path}"
        self.params = dict(params or {})
        self.method = method
        self.caller_number = caller_number
        self.caller_name = caller_name
        self.destination = destination
        self.session_id = session_id or str(uuid.uuid4())
        self.hostname = hostname
        self.created_us = created_us or int(time.time() * 1_000_000)
        self.credentials = credentials
        self.error_file = error_file
        self.apps = {a.lower() for a in apps}
        self.dial = dial
        self.set_params = set_params
        self.max_requests = max_requests
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"FakeFreeSwitch({self.url!r}, session_id={self.session_id!r})"

    def initial_fields(self) -> list[tuple[str, str]]:
        """The persistent params at app start: dialplan {k=v}, hostname, the caller profile."""
        fields = [("url", self.params.get("url", self.url))]
        if self.method == "POST" and "method" not in self.params:
            fields.append(("method", "POST"))
        fields += [(k, v) for k, v in self.params.items() if k != "url"]
        n, t, d = self.caller_number, str(self.created_us), self.destination
        caller = [
            ("Direction", "inbound"),
            ("Logical-Direction", "inbound"),
            ("Dialplan", "xml"),
            ("Caller-ID-Name", self.caller_name),
            ("Caller-ID-Number", n),
            ("Orig-Caller-ID-Name", self.caller_name),
            ("Orig-Caller-ID-Number", n),
            ("Callee-ID-Name", "Outbound Call"),
            ("Callee-ID-Number", "default"),
            ("ANI", n),
            ("Destination-Number", d),
            ("Unique-ID", self.session_id),
            ("Source", "mod_loopback"),
            ("Context", "default"),
            ("Channel-Name", f"loopback/{d}-b"),
            ("Profile-Index", "1"),
            ("Profile-Created-Time", t),
            ("Channel-Created-Time", t),
            ("Channel-Answered-Time", t),
            *((f"Channel-{stamp}", "0") for stamp in _UNSET_STAMPS),
            ("Screen-Bit", "true"),
            ("Privacy-Hide-Name", "false"),
            ("Privacy-Hide-Number", "false"),
        ]
        return [*fields, ("hostname", self.hostname)] + [(f"Caller-{k}", v) for k, v in caller if v]

    def run(self, caller: Caller, *, hangup_after: int | None = None) -> CallLog:
        """Play one whole call; `hangup_after=N`: the caller hangs up once N answers came back."""
        return _Call(self, caller, hangup_after).run()

    def hang_up_now(self, caller: Caller, after: int) -> CallLog:
        """The caller hangs up after `after` requests were answered."""
        return self.run(caller, hangup_after=after)


class _Call:
    """One channel's httapi client: params, once-only fields, the work loop."""

    def __init__(self, fs: FakeFreeSwitch, caller: Caller, hangup_after: int | None) -> None:
        self.fs = fs
        self.log = CallLog()
        self.script: deque[Input] = deque(caller.script)
        self.hangup_after = hangup_after
        self.deadline = time.monotonic() + fs.timeout
        self.params = _Fields()
        for name, value in fs.initial_fields():
            self.params.set(name, value)
        self.once = _Fields()
        self.matching: tuple[_Bind, str] | None = None  # mod_httapi keeps it until the next request
        self.record: tuple[str, str | None] | None = None
        self.buffer_size = 1024  # the response buffer grows and never shrinks during the call
        self.turns = 0

    def fail(self, why: str) -> None:
        raise AssertionError(f"{why}\n{self.fs!r}\n{self.log.format()}")

    def run(self) -> CallLog:
        outcome = None
        while outcome is None:
            if self.turns >= self.fs.max_requests:
                self.fail(f"more than max_requests={self.fs.max_requests} requests in one call")
            outcome = self.turn(self.sync())
        self.log.events.append(outcome)
        self.exiting()
        self.log.unused = list(self.script)
        return self.log

    # -- one request and its document --

    def turn(self, got: Received) -> Outcome | None:
        self.turns += 1
        used = self.buffer(got)
        if got.status == 0:
            return Outcome("exit", reason=f"no HTTP response: {got.error}")
        if got.status != 200:
            return Outcome("exit", reason=f"Received HTTP response: {got.status}")
        if "text/xml" not in (got.content_type or "").lower():
            return Outcome("exit", reason=f"unsupported content-type {got.content_type}")
        doc = self.document(got, used)
        if isinstance(doc, str):
            return Outcome("exit", reason=doc)
        if self.fs.set_params and (params := doc.find("params")) is not None:
            for p in params:
                if value := _body(p):  # an empty element is skipped, not deleted
                    self.params.set(p.tag, value)
        if (variables := doc.find("variables")) is not None and len(variables):
            self.log.events.append(Note("<variables> ignored: set-vars is off"))
        if self.hangup_after is not None and self.turns >= self.hangup_after:
            return Outcome(
                "hangup", cause="NORMAL_CLEARING", by_caller=True, reason="caller hung up"
            )
        work = doc.find("work")
        ran = 0
        for tag in work if work is not None else ():
            handler = _TAGS.get(tag.tag.lower())
            if handler is None:
                return Outcome("exit", reason=f"Unsupported Tag: [{tag.tag}]")
            ran += 1
            if (action := tag.get("action")) is not None:
                self.params.set("url", action)
            if (temp := tag.get("temp-action")) is not None:
                self.once.set("url", temp)
            if outcome := handler(self, tag, _body(tag)):
                return outcome
        return None if ran else Outcome("exit", reason="No instructions found in result!")

    def buffer(self, got: Received) -> int:
        """Bytes the write callback put in the response buffer, growing it as switch_buffer does.

        The callback appends a NUL after every piece curl hands it (chunk boundaries, 16 KiB
        reads: positions approximate). The buffer starts at 1024 bytes, grows by at least 1024
        and is zeroed, never shrunk, between requests.
        """
        used = 0
        for piece in got.pieces:
            for n in (len(piece), 1):
                if self.buffer_size - used < n:
                    self.buffer_size = max(self.buffer_size + n, self.buffer_size + 1024)
                used += n
        return used

    def document(self, got: Received, used: int) -> ET.Element | str:
        """The parsed document, or why mod_httapi's parse_xml gives up on this body.

        ezxml stops at the first NUL, so a body curl delivered in pieces is cut at the first
        piece. parse_xml also needs room left in the buffer after the data: a body that fills
        it exactly (1023 bytes while it is 1024) is skipped. Both are read from the source, not
        seen on a switch.
        """
        if not used:
            return "empty response body"
        if not self.buffer_size > used:
            return f"response buffer exactly full ({used} bytes with NULs): parse_xml skips it"
        text = got.pieces[0]
        try:
            return ET.fromstring(text.lstrip())
        except ET.ParseError as exc:
            return f"unparsable XML: {exc}"

    # -- the HTTP side --

    def sync(self) -> Received:
        """httapi_sync: merge the once-only fields, send, read the answer."""
        fields = self.params.copy()
        for name, value in self.once.items:
            fields.set(name, value)
        self.once = _Fields()
        self.matching = None
        method = fields.get("method")
        url = fields.get("url")
        if url is None:  # the profile's gateway-url
            url = self.fs.url
            self.params.set("url", url)
            fields.set("url", url)
        fields.set("session_id", self.fs.session_id, top=True)
        url = re.sub(r"\$\{([^}]*)\}", lambda m: fields.get(m.group(1)) or "", url)
        post = method is not None and method.lower() == "post"
        content_type, body = None, b""
        if any(n.lower().startswith("attach_file:") for n, _ in fields.items):
            content_type, body = _multipart(fields.items)
            verb = method or "POST"
        else:
            data = "&".join(f"{n}={httapi_encode(v)}" for n, v in fields.items)
            if post:
                content_type, body = "application/x-www-form-urlencoded", data.encode()
            else:
                url = f"{url}{'&' if '?' in url else '?'}{data}"
            verb = method or "GET"
        sent, got = self.http(verb, url, content_type, body, tuple(fields.items))
        if sent is not None:
            self.log.events.append(sent)
        self.log.events.append(got)
        return got

    def http(
        self,
        verb: str,
        url: str,
        content_type: str | None,
        body: bytes,
        fields: tuple[tuple[str, str], ...],
    ) -> tuple[Sent | None, Received]:
        parts = urlsplit(url)
        if parts.scheme.lower() != "http" or not parts.hostname:
            return None, Received(0, (), b"", error=f"curl cannot fetch {url[:120]!r}")
        if parts.hostname not in _LOOPBACK:
            self.fail(f"the fake only talks to loopback, not {parts.hostname}")
        try:
            port = parts.port or 80
        except ValueError:
            return None, Received(0, (), b"", error=f"curl cannot fetch {url[:120]!r}")
        creds = self.fs.credentials
        if parts.username is not None:
            creds = (parts.username, parts.password or "")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
        headers = [("Host", host)]
        if creds:
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            headers.append(("Authorization", f"Basic {token}"))
        headers += [("User-Agent", "mod_httapi/1.0"), ("Accept", "*/*"), ("Cookie", "")]
        if content_type:
            headers += [("Content-Length", str(len(body))), ("Content-Type", content_type)]
        head = f"{verb} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
        raw = head.encode() + b"\r\n" + body
        sent = Sent(verb, target, tuple(headers), body, fields, url, raw)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.fail(f"call took longer than timeout={self.fs.timeout}s")
        try:
            with socket.create_connection((parts.hostname, port), timeout=remaining) as sock:
                sock.sendall(raw)
                return sent, _read_response(sock)
        except TimeoutError:
            self.log.events.append(sent)
            self.fail(f"no answer within timeout={self.fs.timeout}s")
            raise  # unreachable: fail raises
        except (OSError, ValueError, IndexError) as exc:  # refused, reset, or not HTTP at all
            return sent, Received(0, (), b"", error=f"{type(exc).__name__}: {exc}")

    def exiting(self) -> None:
        """my_on_reporting: `exiting=true` (and a recordCall upload) to the current url."""
        self.once.set("exiting", "true")
        if self.record:
            name, action = self.record
            self.once.set(f"attach_file:{name}:{self.fs.session_id}.wav", "recording")
            if action and action != self.params.get("url"):
                self.once.set("url", action)
                self.sync()
                self.once.set("exiting", "true")
        self.sync()

    # -- input --

    def next_input(self) -> Input:
        return self.script.popleft() if self.script else Silence()

    def prompt(self, tag: ET.Element, body: str) -> Outcome | None:
        """parse_playback: speak, say, playback and pause, with their binds, loops and ASR.

        Each attempt takes the caller's next Input. Simplifications: digits keyed after a match
        or a failed attempt are dropped (on a switch they stay queued for the next tag), and
        keying happens right after the prompt, so the digit timeout fires unless the input
        timeout is shorter. ASR is only on `<playback>` with both asr-engine and asr-grammar;
        a result is posted as `detected_speech`, and no result posts nothing (never `invalid`).
        """
        kind = tag.tag.lower()
        file, text = tag.get("file"), None
        name = tag.get("name") or "dialed_digits"
        error_file = tag.get("error-file")
        engine = voice = None
        pause = speech = False
        timeout = _atoi(tag.get("input-timeout")) or 5000
        if kind in ("say", "speak"):
            text = tag.get("text") or file or body or None
            if kind == "say" and not all(tag.get(a) for a in ("language", "type", "method")):
                return Outcome("exit", reason="say: missing required attributes or text")
            if kind == "speak":
                engine, voice = tag.get("engine"), tag.get("voice")
                if not engine:
                    return Outcome("exit", reason="speak: missing engine attribute!")
        elif kind == "pause":
            pause = True
            timeout = _atoi(tag.get("milliseconds"))
            timeout = timeout if timeout > 0 else 1000
        else:
            grammar = tag.get("asr-grammar")
            speech = grammar is not None and tag.get("asr-engine") is not None
        loops = _atoi(tag.get("loops"))
        digit_timeout = _atoi(tag.get("digit-timeout")) or 1500
        binds = tag.findall("bind")
        machine = None
        if binds:
            machine = _DigitMachine(binds, tag.get("terminators") or "", tag.get("action"))
        elif not file:
            file = body
        if not file and kind == "playback":
            return Outcome("hangup", cause="DESTINATION_OUT_OF_ORDER", reason="missing file")
        if error_file is None and machine and self.fs.error_file:
            error_file = ""
            self.log.events.append(Note(f"<{tag.tag}> has no error-file; error_file=True adds one"))
        attempts, submit = max(loops, 0) + 1, False
        events = self.log.events
        for attempt in range(1, attempts + 1):
            if not pause:
                said = text if kind != "playback" else file
                events.append(Heard(kind, said or "", bool(machine) or speech, engine, voice))
            if not machine and not speech:
                if not pause:
                    submit = True
                    break
                continue  # a plain pause just waits
            heard = self.next_input()
            seen = (kind, name, attempt, attempts, not pause, heard)
            if speech and isinstance(heard, Speech):
                result = recognizer_result(heard, tag.get("asr-grammar") or "")
                self.once.set(name, result)
                self.once.set("input_type", "detected_speech")
                events.append(Offered(*seen, "speech", result))
                submit = True
                break
            if speech and not (machine and isinstance(heard, Digits)):
                events.append(Offered(*seen, "none"))  # no recognizer result
                if not machine:
                    submit = True
                    break
                continue
            assert machine is not None
            status = "break"
            if isinstance(heard, Digits):
                for digit in heard.digits:
                    if (status := machine.feed(digit)) != "pending":
                        break
                else:  # the digit timeout fires unless the input timeout ends the wait first
                    status = machine.expire() if digit_timeout <= timeout else "break"
            if status == "overflow":
                return Outcome("exit", reason="dmachine overflow error!")
            if status == "found":
                assert machine.found is not None
                self.matching = machine.found
                bind, digits = machine.found
                events.append(Offered(*seen, "dtmf", _strip(digits, bind.strip)))
                submit = True
                break
            if error_file is not None:
                events.append(Offered(*seen, "invalid", "invalid"))
                if error_file:
                    events.append(Heard("error-file", error_file, False))
                self.once.set(name, "invalid")
                self.once.set("input_type", "invalid")
            else:
                events.append(Offered(*seen, "none"))
        return self.submit(name, tag.get("action") if machine else None) if submit else None

    def submit(self, name: str, tag_action: str | None) -> Outcome | None:
        """Post the matched digits (strip applied) and follow the bind's or the tag's action.

        As in mod_httapi, the match survives until the next request, so a later tag of the same
        document that submits re-posts it under its own name.
        """
        if self.matching is None:
            return None
        bind, digits = self.matching
        digits = _strip(digits, bind.strip)
        self.matching = (bind, digits)
        self.once.set(name, digits)
        self.once.set("input_type", "dtmf")
        action = bind.action or bind.parent_action or tag_action
        if action and action.lower().startswith("dial:"):
            return Outcome("dial", extension=digits, reason=f"bind action {action}")
        if action:
            self.params.set("url", action)
        return None

    # -- the other tags --

    def execute(self, tag: ET.Element, body: str) -> Outcome | None:
        app, data = tag.get("application"), tag.get("data") or body
        if not app:
            return Outcome("hangup", cause="DESTINATION_OUT_OF_ORDER", reason="Invalid app")
        if app.lower() not in self.fs.apps:
            return Outcome("hangup", cause="DESTINATION_OUT_OF_ORDER", reason=f"{app}: denied")
        if "$" in data:
            return Outcome("hangup", cause="DESTINATION_OUT_OF_ORDER", reason="expand-vars denied")
        if app.lower() in ("transfer", "hangup"):
            return Outcome("execute", application=app, data=data)
        self.log.events.append(Note(f"executed {app} {data}"))
        return None

    def dial(self, tag: ET.Element, body: str) -> Outcome | None:
        if not self.fs.dial:
            return Outcome("hangup", cause="DESTINATION_OUT_OF_ORDER", reason="dial: denied")
        for attr in ("context", "dialplan", "caller-id-name", "caller-id-number"):
            if tag.get(attr) is not None:
                self.log.events.append(Note(f"<dial {attr}> ignored: needs dial-set-* permission"))
        return Outcome("dial", extension=body)

    def hangup(self, tag: ET.Element, body: str) -> Outcome | None:
        return Outcome("hangup", cause=tag.get("cause") or body or "NORMAL_CLEARING")

    def record_call(self, tag: ET.Element, body: str) -> Outcome | None:
        name = tag.get("name") or "recorded_file"
        if self.record is None and not name.lower().startswith("http://"):
            self.record = (name, tag.get("action"))
        return None

    def simple(self, tag: ET.Element, body: str) -> Outcome | None:
        kind = tag.tag.lower()
        if kind in ("answer", "preanswer", "ringready"):
            return Outcome("exit", reason=f"<{tag.tag}> returns non-success: the work ends (§1.4)")
        if kind == "break":
            return Outcome("exit", reason="<break>")
        if kind == "log":
            self.log.events.append(Note(f"log: {body}"))
        elif kind == "getvariable" and tag.get("name"):
            return Outcome("exit", reason="getVariable: get-vars permission denied")
        elif kind == "sms" and not tag.get("to"):
            return Outcome("exit", reason="sms: missing 'to' attribute")
        elif kind == "conference":
            return Outcome("hangup", cause="DESTINATION_OUT_OF_ORDER", reason="conference denied")
        elif kind in ("record", "vmname", "voicemail"):
            self.fail(f"the fake does not model <{tag.tag}>")
        return None


_SIMPLE_TAGS = (
    *("answer", "preanswer", "ringready", "break", "log", "continue", "getvariable", "sms"),
    *("conference", "record", "vmname", "voicemail"),
)
_TAGS = {
    "speak": _Call.prompt,
    "say": _Call.prompt,
    "playback": _Call.prompt,
    "pause": _Call.prompt,
    "execute": _Call.execute,
    "dial": _Call.dial,
    "hangup": _Call.hangup,
    "recordcall": _Call.record_call,
    **dict.fromkeys(_SIMPLE_TAGS, _Call.simple),
}


def _multipart(fields: list[tuple[str, str]]) -> tuple[str, bytes]:
    """curl's form post: every field a part, `attach_file:<name>:<file>` a file part."""
    boundary = "-" * 24 + uuid.uuid4().hex[:16]
    out = []
    for name, value in fields:
        if name.lower().startswith("attach_file:"):
            part, _, filename = name[12:].partition(":")
            out.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                + RECORDING
                + b"\r\n"
            )
        else:
            out.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
    out.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(out)


def _read_response(sock: socket.socket) -> Received:
    """One HTTP/1.1 response; 1xx skipped; Content-Length, chunked or read-to-close bodies."""
    buf = b""

    def more() -> bytes:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        return chunk

    while True:
        while b"\r\n\r\n" not in buf:
            buf += more()
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = tuple(
            (n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])
        )
        if status >= 200:
            break
    get = {n.lower(): v for n, v in reversed(headers)}.get
    pieces: list[bytes] = []
    if "chunked" in (get("transfer-encoding") or "").lower():
        while True:
            while b"\r\n" not in buf:
                buf += more()
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += more()
            if size == 0:
                break
            chunk, buf = buf[:size], buf[size + 2 :]
            pieces += [chunk[i : i + CURL_MAX_WRITE] for i in range(0, size, CURL_MAX_WRITE)]
            if sum(map(len, pieces)) >= MAX_BODY:
                break
        body = b"".join(pieces)
    else:
        length = get("content-length")
        want = int(length) if length is not None else None
        if status in (204, 304):
            want = 0
        try:
            while (want is None or len(buf) < want) and len(buf) < MAX_BODY:
                buf += more()
        except ConnectionError:
            if want is not None:
                raise
        body = buf if want is None else buf[:want]
        pieces = [body[i : i + CURL_MAX_WRITE] for i in range(0, len(body), CURL_MAX_WRITE)]
    error = f"Oversized file detected [{len(body)} bytes]" if len(body) >= MAX_BODY else ""
    if error:
        return Received(0, headers, body[:MAX_BODY], error=error)
    return Received(status, headers, body, pieces=tuple(pieces))


__all__ = [
    "MAX_BODY",
    "RECORDING",
    "CallLog",
    "Caller",
    "Digits",
    "FakeFreeSwitch",
    "Heard",
    "Input",
    "Note",
    "Offered",
    "Outcome",
    "Received",
    "Sent",
    "Silence",
    "Speech",
    "httapi_encode",
    "recognizer_result",
]

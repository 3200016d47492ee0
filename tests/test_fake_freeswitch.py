"""The fake FreeSWITCH against a scripted httapi server on loopback.

The server here is a few dozen lines over a raw socket: it records every request's bytes and
answers from a script of canned documents (exiting requests get 200 text/plain OK). The
checks are on the wire: the §7 capture of a real FreeSWITCH 1.10.12 byte for byte, POST mode,
field order and persistence, bind evaluation, loops, ASR result forms, and every way the
httapi app ends.
"""

from __future__ import annotations

import email
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import pytest

from tests.fake_freeswitch import (
    RECORDING,
    Caller,
    CallLog,
    Digits,
    FakeFreeSwitch,
    Silence,
    Speech,
    httapi_encode,
    recognizer_result,
)

SID = "e860639e-1726-4c19-aab1-8cf9d1e54780"
CREATED = 1795318951519486
# §7, request 1, exactly as FreeSWITCH 1.10.12 sent it (port 8099 is replaced by the test's).
CAPTURED = "/fs/httapi?session_id=e860639e-1726-4c19-aab1-8cf9d1e54780&url=http%3A//127.0.0.1%3A8099/fs/httapi&hostname=vm&Caller-Direction=inbound&Caller-Logical-Direction=inbound&Caller-Dialplan=xml&Caller-Caller-ID-Name=SmokeTest&Caller-Caller-ID-Number=1000&Caller-Orig-Caller-ID-Name=SmokeTest&Caller-Orig-Caller-ID-Number=1000&Caller-Callee-ID-Name=Outbound%20Call&Caller-Callee-ID-Number=default&Caller-ANI=1000&Caller-Destination-Number=5000&Caller-Unique-ID=e860639e-1726-4c19-aab1-8cf9d1e54780&Caller-Source=mod_loopback&Caller-Context=default&Caller-Channel-Name=loopback/5000-b&Caller-Profile-Index=1&Caller-Profile-Created-Time=1795318951519486&Caller-Channel-Created-Time=1795318951519486&Caller-Channel-Answered-Time=1795318951519486&Caller-Channel-Progress-Time=0&Caller-Channel-Progress-Media-Time=0&Caller-Channel-Hangup-Time=0&Caller-Channel-Transfer-Time=0&Caller-Channel-Resurrect-Time=0&Caller-Channel-Bridged-Time=0&Caller-Channel-Last-Hold=0&Caller-Channel-Hold-Accum=0&Caller-Screen-Bit=true&Caller-Privacy-Hide-Name=false&Caller-Privacy-Hide-Number=false"


# --- a scripted httapi server --------------------------------------------------------------------


@dataclass
class Got:
    """One request as the server received it."""

    raw: bytes
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def fields(self) -> list[tuple[str, str]]:
        """Decoded name/value pairs from the query string or an url-encoded body."""
        ctype = dict((n.lower(), v) for n, v in self.headers).get("content-type", "")
        data = self.body.decode() if "urlencoded" in ctype else self.target.partition("?")[2]
        return [(n, unquote(v)) for n, _, v in (p.partition("=") for p in data.split("&") if p)]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.fields]

    def get(self, name: str) -> str | None:
        return dict(self.fields).get(name)


@dataclass
class Answer:
    body: bytes | str = b""
    status: int = 200
    content_type: str | None = "text/xml"
    chunks: list[bytes] | None = None  # sent chunked, one chunk each

    def wire(self) -> bytes:
        head = [f"HTTP/1.1 {self.status} {'OK' if self.status == 200 else 'Nope'}"]
        if self.content_type:
            head.append(f"Content-Type: {self.content_type}")
        body = self.body.encode() if isinstance(self.body, str) else self.body
        if self.chunks is not None:
            head.append("Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in self.chunks) + b"0\r\n\r\n"
        else:
            head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class ScriptedServer:
    """A raw HTTP/1.1 server on 127.0.0.1 that records requests and answers via `answer`."""

    def __init__(self, answer: Callable[[Got], Answer]) -> None:
        self.answer = answer
        self.got: list[Got] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self._sock.close()
        for t in self._threads:
            t.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            buf = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ")
                    headers = [(n, v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])]
                    length = int(dict((n.lower(), v) for n, v in headers).get("content-length", 0))
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    body, buf = buf[:length], buf[length:]
                    got = Got(head + b"\r\n\r\n" + body, method, target, headers, body)
                    self.got.append(got)
                    conn.sendall(self.answer(got).wire())
            except OSError:
                return


def doc(work: str, params: str = "") -> str:
    params = f"<params>{params}</params>" if params else ""
    return f'<document type="xml/freeswitch-httapi">{params}<work>{work}</work></document>'


def script(*documents: str | Answer) -> Callable[[Got], Answer]:
    """Answer turn n with documents[n] (then `<hangup/>`), and exiting with 200 text/plain OK."""
    turns = iter(documents)

    def answer(got: Got) -> Answer:
        if got.get("exiting") == "true":
            return Answer(b"OK", content_type="text/plain")
        item = next(turns, doc("<hangup/>"))
        return item if isinstance(item, Answer) else Answer(item)

    return answer


def call(
    *documents: str | Answer, caller: Caller | None = None, **kw: object
) -> tuple[ScriptedServer, CallLog]:
    """One call of a fake switch against a server scripted with `documents`."""
    with ScriptedServer(script(*documents)) as server:
        kw.setdefault("path", "/fs/httapi")
        fs = FakeFreeSwitch(server.port, **kw)  # type: ignore[arg-type]
        log = fs.run(caller or Caller())
    return server, log


SPEAK = '<speak engine="flite" voice="slt" text="{}"/>'


def menu(binds: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<speak engine="flite" voice="slt" name="menu" text="Menu."{extra}>{binds}</speak>'


# --- the wire ------------------------------------------------------------------------------------


def test_fake_requests_match_the_section7_capture_byte_for_byte() -> None:
    prompt = menu(r'<bind strip="#">~\d+#</bind>')
    server, log = call(
        doc(prompt),
        doc("<hangup/>"),
        caller=Caller([Digits("12#")]),
        session_id=SID,
        created_us=CREATED,
    )
    target = CAPTURED.replace("8099", str(server.port))
    headers = f"Host: 127.0.0.1:{server.port}\r\nUser-Agent: mod_httapi/1.0\r\nAccept: */*\r\nCookie: \r\n\r\n"
    assert [g.raw.decode() for g in server.got] == [
        f"GET {target} HTTP/1.1\r\n{headers}",
        f"GET {target}&menu=12&input_type=dtmf HTTP/1.1\r\n{headers}",
        f"GET {target}&exiting=true HTTP/1.1\r\n{headers}",
    ]
    assert [r.raw for r in log.requests] == [g.raw for g in server.got]
    assert "url=http%3A//127.0.0.1%3A" in server.got[0].target
    assert log.outcome.kind == "hangup" and log.outcome.cause == "NORMAL_CLEARING"
    assert log.heard[0].interruptible and log.inputs[0].value == "12"


def test_fake_post_sends_a_form_body_and_the_method_as_spelled() -> None:
    server, _ = call(doc("<hangup/>"), method="POST", params={"instance": "demo"})
    first = server.got[0]
    assert first.raw.startswith(b"POST /fs/httapi HTTP/1.1\r\n")
    assert [n for n, _ in first.headers] == [
        "Host",
        "User-Agent",
        "Accept",
        "Cookie",
        "Content-Length",
        "Content-Type",
    ]
    assert dict(first.headers)["Content-Type"] == "application/x-www-form-urlencoded"
    assert int(dict(first.headers)["Content-Length"]) == len(first.body)
    assert first.names[:6] == [
        "session_id",
        "url",
        "method",
        "instance",
        "hostname",
        "Caller-Direction",
    ]
    assert first.get("method") == "POST" and first.get("instance") == "demo"
    assert server.got[1].method == "POST" and server.got[1].get("exiting") == "true"
    # libcurl writes a custom method verbatim: a dialplan's method=post goes out lower-case.
    server, _ = call(doc("<hangup/>"), params={"method": "post"})
    assert server.got[0].raw.startswith(b"post /fs/httapi HTTP/1.1\r\n")
    assert server.got[0].get("method") == "post" and server.got[0].body


def test_fake_sends_basic_credentials_after_host() -> None:
    server, _ = call(doc("<hangup/>"), credentials=("fs", "s3cret"))
    assert server.got[0].headers[:3] == [
        ("Host", f"127.0.0.1:{server.port}"),
        ("Authorization", "Basic ZnM6czNjcmV0"),
        ("User-Agent", "mod_httapi/1.0"),
    ]


def test_httapi_encode_uses_freeswitchs_unsafe_set_only() -> None:
    assert httapi_encode("a b\r\n\"#%&+:;<=>?@[\\]^`{|}/-_.~!$'()*,") == (
        "a%20b%0D%0A%22%23%25%26%2B%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D/-_.~!$'()*,"
    )
    assert httapi_encode("查询\x7f\t") == "%E6%9F%A5%E8%AF%A2%7F%09"


def test_fake_params_persist_and_once_only_fields_go_once() -> None:
    base = "http://127.0.0.1:{port}/fs"
    holder: dict[str, int] = {}

    def answer(got: Got) -> Answer:
        url = base.format(port=holder["port"])
        if got.get("exiting") == "true":
            return Answer(b"OK", content_type="text/plain")
        docs = [
            doc(menu("<bind>1</bind><bind>2</bind>", action=f"{url}/menu"), "<step>menu</step>"),
            doc(f'<continue temp-action="{url}/temp"/>', "<step>confirm</step><empty></empty>"),
            doc("<hangup/>"),
        ]
        return Answer(docs[len(server.got) - 1])

    with ScriptedServer(answer) as server:
        holder["port"] = server.port
        log = FakeFreeSwitch(server.port, path="/fs/httapi").run(Caller([Digits("1")]))
    url = base.format(port=server.port)
    first, second, third, exiting = server.got
    assert first.path == "/fs/httapi" and first.names[-1] == "Caller-Privacy-Hide-Number"
    assert second.path == "/fs/menu"
    assert second.fields[-4:] == [
        ("step", "menu"),
        ("url", f"{url}/menu"),
        ("menu", "1"),
        ("input_type", "dtmf"),
    ]
    assert third.path == "/fs/temp"
    assert third.fields[-2:] == [("step", "confirm"), ("url", f"{url}/temp")]
    assert (
        "menu" not in third.names and "input_type" not in third.names and "empty" not in third.names
    )
    assert exiting.path == "/fs/menu"
    assert exiting.fields[-3:] == [("url", f"{url}/menu"), ("step", "confirm"), ("exiting", "true")]
    assert [g.names.count("session_id") for g in server.got] == [1, 1, 1, 1]
    assert all(g.names[0] == "session_id" for g in server.got)
    assert log.exiting is not None and log.exiting.url.startswith(f"{url}/menu?")


# --- input -----------------------------------------------------------------------------------------

BINDS = [
    # (binds, extra attributes, keyed, posted)
    ("<bind>1</bind><bind>2</bind>", {}, "2", "2"),
    ("<bind>1</bind><bind>12</bind>", {}, "1", "1"),  # exact, at the digit timeout
    ("<bind>1</bind><bind>12</bind>", {}, "12", "12"),
    (r"<bind>~\d+</bind>", {}, "123", "1"),  # a lone regex fires on the first digit
    (r'<bind strip="#">~\d+#</bind>', {}, "4711#", "4711"),
    (r'<bind strip="#">~^\d{3}#$</bind>', {}, "123#", "123"),
    (r"<bind>1</bind><bind>2</bind><bind>~^\d{4}$</bind>", {}, "1234", "1234"),
    (r"<bind>1</bind><bind>2</bind><bind>~^\d{4}$</bind>", {}, "1", "1"),
    ("<bind>12</bind>", {"terminators": "#"}, "12#", "12"),
    ("<bind>123</bind>", {"terminators": "#"}, "12#", "invalid"),
    ("<bind>1</bind><bind>2</bind>", {}, "3", "invalid"),  # no bind can match: at once
    (r"<bind>~^1\d$</bind><bind>~^2\d$</bind>", {}, "25", "25"),  # two regexes: at the timeout
]


@pytest.mark.parametrize(("binds", "attrs", "keyed", "posted"), BINDS)
def test_fake_evaluates_binds_like_the_digit_machine(
    binds: str, attrs: dict[str, str], keyed: str, posted: str
) -> None:
    prompt = menu(binds, error_file="ivr/ivr-that_was_an_invalid_entry.wav", **attrs)
    server, log = call(doc(prompt), caller=Caller([Digits(keyed)]))
    assert server.got[1].get("menu") == posted
    assert server.got[1].get("input_type") == ("invalid" if posted == "invalid" else "dtmf")
    assert log.inputs[0].value == posted


def test_fake_loops_give_n_plus_one_attempts_with_the_error_file() -> None:
    prompt = menu("<bind>1</bind><bind>2</bind>", loops="2", error_file="ivr/bad.wav")
    server, log = call(doc(prompt), caller=Caller([Silence(), Digits("9"), Digits("1")]))
    assert log.prompts == ["Menu.", "ivr/bad.wav", "Menu.", "ivr/bad.wav", "Menu."]
    assert [i.result for i in log.inputs] == ["invalid", "invalid", "dtmf"]
    assert [i.attempt for i in log.inputs] == [1, 2, 3]
    assert server.got[1].fields[-2:] == [("menu", "1"), ("input_type", "dtmf")]
    assert len(server.got) == 3  # the input result went out once, not on the exiting request
    assert "menu" not in server.got[2].names


def test_fake_posts_invalid_only_with_an_error_file() -> None:
    prompt = menu("<bind>1</bind>", loops="1", error_file="ivr/bad.wav")
    server, log = call(doc(prompt))
    assert server.got[1].fields[-2:] == [("menu", "invalid"), ("input_type", "invalid")]
    assert log.prompts.count("Menu.") == 2
    server, log = call(doc(menu("<bind>1</bind>", loops="1")))
    assert "menu" not in server.got[1].names and "input_type" not in server.got[1].names
    assert [i.result for i in log.inputs] == ["none", "none"]
    # The test knob: as if the tag had an error-file, and said so in the log.
    server, log = call(doc(menu("<bind>1</bind>")), error_file=True)
    assert server.got[1].get("menu") == "invalid"
    assert any("error_file=True" in n for n in log.notes)


def test_fake_prompt_then_pause_takes_input_only_after_the_prompt() -> None:
    work = (
        SPEAK.format("Press 1.") + '<pause milliseconds="4000" name="choice"><bind>1</bind></pause>'
    )
    server, log = call(doc(work), caller=Caller([Digits("1")]))
    assert [(h.text, h.interruptible) for h in log.heard] == [("Press 1.", False)]
    assert [(i.tag, i.during_prompt, i.value) for i in log.inputs] == [("pause", False, "1")]
    assert server.got[1].get("choice") == "1"
    # A prompt without binds is not an input opportunity: the script is left untouched.
    _, log = call(doc(SPEAK.format("Hello.")), caller=Caller([Digits("5")]))
    assert log.inputs == [] and log.unused == [Digits("5")]


def test_fake_follows_bind_actions_and_keeps_a_match_until_the_next_request() -> None:
    # A bind's dial: action transfers the call to the keyed digits.
    prompt = menu(r'<bind action="dial:" strip="#">~^\d{4}#$</bind>')
    server, log = call(doc(prompt), caller=Caller([Digits("1001#")]))
    assert (log.outcome.kind, log.outcome.extension) == ("dial", "1001")
    assert server.got[1].fields[-3:] == [
        ("menu", "1001"),
        ("input_type", "dtmf"),
        ("exiting", "true"),
    ]
    # mod_httapi clears the match only per request: a later prompt of the same document
    # re-posts it under its own name (read from parse_playback, not seen on a switch).
    server, log = call(
        doc(menu("<bind>1</bind>") + SPEAK.format("Thanks.")), caller=Caller([Digits("1")])
    )
    assert server.got[1].fields[-3:] == [
        ("menu", "1"),
        ("dialed_digits", "1"),
        ("input_type", "dtmf"),
    ]
    _, log = call(
        doc(SPEAK.format("Hi"), "<x>1</x>").replace(
            "<work>", "<variables><a>b</a></variables><work>"
        )
    )
    assert "<variables> ignored: set-vars is off" in log.notes


@pytest.mark.parametrize("form", ["nlsml", "pocketsphinx", "plain"])
def test_fake_posts_asr_results_in_the_recognizers_form(form: str) -> None:
    playback = (
        '<playback file="ivr/what.wav" name="said" asr-engine="unimrcp" asr-grammar="balance"/>'
    )
    speech = Speech("查询余额", confidence=0.9, form=form)  # type: ignore[arg-type]
    server, log = call(doc(playback), caller=Caller([speech]))
    expected = {
        "nlsml": '<?xml version="1.0"?><result><interpretation grammar="balance" confidence="0.90"><instance>查询余额</instance><input mode="speech">查询余额</input></interpretation></result>',
        "pocketsphinx": '<result grammar="balance"><interpretation grammar="balance" confidence="90"><input mode="speech">查询余额</input></interpretation></result>',
        "plain": "查询余额",
    }[form]
    assert recognizer_result(speech, "balance") == expected
    assert server.got[1].fields[-2:] == [("said", expected), ("input_type", "detected_speech")]
    assert server.got[1].target.endswith(
        f"said={httapi_encode(expected)}&input_type=detected_speech"
    )
    assert log.heard[0].text == "ivr/what.wav" and log.heard[0].interruptible


def test_fake_hears_speech_only_with_asr_on_a_playback() -> None:
    # speak with binds but no ASR: speech is silence, so the attempt fails.
    prompt = menu("<bind>1</bind>", error_file="ivr/bad.wav")
    server, _ = call(doc(prompt), caller=Caller([Speech("one")]))
    assert server.got[1].get("menu") == "invalid"
    # asr attributes on <speak> are not read; only <playback> has ASR.
    speak_asr = menu("<bind>1</bind>", asr_engine="unimrcp", asr_grammar="g")
    server, _ = call(doc(speak_asr), caller=Caller([Speech("one")]))
    assert "menu" not in server.got[1].names
    # ASR playback that hears nothing posts nothing, and without binds gets one attempt.
    asr = '<playback file="ivr/what.wav" name="said" loops="2" error-file="x.wav" asr-engine="unimrcp" asr-grammar="g"/>'
    server, log = call(doc(asr))
    assert "said" not in server.got[1].names and len(log.inputs) == 1


# --- how the app ends -----------------------------------------------------------------------------

EXITS = [
    Answer(doc(SPEAK.format("x")), content_type="application/xml"),
    Answer(doc(SPEAK.format("x")), content_type="text/plain"),
    Answer(doc(SPEAK.format("x")), status=500),
    Answer(doc(SPEAK.format("x")), content_type=None),
    Answer("this is not xml"),
    Answer(doc("")),
    Answer(doc("<getDigits/>" + SPEAK.format("x"))),
    Answer(doc("<break/>" + SPEAK.format("x"))),
    Answer(doc('<speak text="no engine"/>')),
    Answer(doc('<execute application="bridge" data="user/1001"/>')),
    Answer(doc('<execute application="transfer" data="${destination_number} XML default"/>')),
]


@pytest.mark.parametrize("answer", EXITS)
def test_fake_exits_on_what_mod_httapi_refuses(answer: Answer) -> None:
    server, log = call(answer, doc("<hangup/>"))
    assert log.outcome.kind in ("exit", "hangup")
    if log.outcome.kind == "hangup":
        assert log.outcome.cause == "DESTINATION_OUT_OF_ORDER"
    assert log.prompts == []
    assert len(server.got) == 2 and server.got[1].get("exiting") == "true"


def test_fake_reads_text_xml_with_parameters_and_any_case() -> None:
    answer = Answer(
        doc("<SPEAK engine='flite' text='Hi'/><Hangup/>"), content_type="Text/XML; charset=utf-8"
    )
    _, log = call(answer)
    assert log.prompts == ["Hi"] and log.outcome.kind == "hangup"


def test_fake_answer_tag_ends_the_work() -> None:
    server, log = call(doc("<answer/>" + SPEAK.format("Welcome")))
    assert log.outcome.kind == "exit" and "answer" in log.outcome.reason
    assert log.prompts == [] and len(server.got) == 2


def test_fake_dial_ends_the_app_and_sends_exiting_at_once() -> None:
    work = SPEAK.format("Connecting you.") + "<dial>1001</dial>" + SPEAK.format("never")
    server, log = call(doc(work, "<step>transfer</step>"))
    assert log.outcome.kind == "dial" and log.outcome.extension == "1001"
    assert log.prompts == ["Connecting you."]
    assert len(server.got) == 2
    assert server.got[1].fields[-2:] == [("step", "transfer"), ("exiting", "true")]


def test_fake_execute_transfer_and_hangup_end_the_call() -> None:
    _, log = call(doc('<execute application="transfer" data="1001 XML default"/>'))
    assert (log.outcome.kind, log.outcome.application, log.outcome.data) == (
        "execute",
        "transfer",
        "1001 XML default",
    )
    _, log = call(doc('<hangup cause="USER_BUSY"/>'))
    assert (log.outcome.kind, log.outcome.cause) == ("hangup", "USER_BUSY")


def test_fake_caller_hangs_up_after_n_requests() -> None:
    with ScriptedServer(script(doc(menu("<bind>1</bind>"), "<step>menu</step>"))) as server:
        log = FakeFreeSwitch(server.port).hang_up_now(Caller([Digits("1")]), after=1)
    assert log.outcome.kind == "hangup" and log.outcome.by_caller
    assert len(server.got) == 2
    assert server.got[1].fields[-2:] == [("step", "menu"), ("exiting", "true")]
    assert log.unused == [Digits("1")]


def test_fake_uploads_a_call_recording_with_the_exiting_request() -> None:
    server, log = call(
        doc('<recordCall name="rec" limit="600"/>' + SPEAK.format("Hi")), doc("<hangup/>")
    )
    exiting = server.got[-1]
    assert exiting.method == "POST" and exiting.target == "/fs/httapi"
    ctype = dict(exiting.headers)["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    message = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + exiting.body)
    parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
    assert next(iter(parts)) == "session_id" and parts["exiting"].get_payload() == "true"
    assert parts["rec"].get_filename() == f"{log.requests[0].get('session_id')}.wav"
    assert parts["rec"].get_payload(decode=True) == RECORDING


# --- limits and quirks ----------------------------------------------------------------------------


def test_fake_exits_when_nothing_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    log = FakeFreeSwitch(port).run(Caller())
    assert log.outcome.kind == "exit" and "Refused" in log.outcome.reason
    assert [r.status for r in log.responses] == [0, 0] and log.exiting is not None


def test_fake_fails_a_looping_server_after_max_requests() -> None:
    with ScriptedServer(lambda got: Answer(doc(SPEAK.format("again")))) as server:
        fs = FakeFreeSwitch(server.port, max_requests=5)
        with pytest.raises(AssertionError, match="max_requests=5") as raised:
            fs.run(Caller())
    assert len(server.got) == 5 and "again" in str(raised.value)


def test_fake_fails_a_server_that_does_not_answer_in_time() -> None:
    def slow(got: Got) -> Answer:
        time.sleep(1.0)
        return Answer(doc("<hangup/>"))

    with ScriptedServer(slow) as server:
        started = time.monotonic()
        with pytest.raises(AssertionError, match="timeout"):
            FakeFreeSwitch(server.port, timeout=0.3).run(Caller())
        assert time.monotonic() - started < 1.0


def test_fake_models_the_response_buffer_quirks() -> None:
    # A body that fills mod_httapi's 1024-byte buffer exactly (with its NUL) is skipped.
    work = SPEAK.format("Hi") + "<hangup/>"
    body = doc(work)
    padded = body.replace("<work>", "<work>" + " " * (1023 - len(body)))
    assert len(padded) == 1023
    _, log = call(Answer(padded))
    assert log.outcome.kind == "exit" and "buffer" in log.outcome.reason
    _, log = call(Answer(padded + " "))
    assert log.outcome.kind == "hangup"
    # A chunked body reaches the parser cut at the first chunk.
    _, log = call(Answer(chunks=[body[:40].encode(), body[40:].encode()]))
    assert log.outcome.kind == "exit" and "XML" in log.outcome.reason
    _, log = call(Answer(chunks=[body.encode()]))
    assert log.outcome.kind == "hangup" and log.prompts == ["Hi"]

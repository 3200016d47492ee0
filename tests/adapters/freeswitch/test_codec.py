"""The mod_httapi codec, by plain function calls against captured requests and golden documents.

The requests are the ones reference/pbx-protocols.md §7 captured from a real
FreeSWITCH 1.10.12, and the §1.7 POST body. The documents under golden/ were
written by hand against §1.4/§1.5; the tests compare bytes and then check the
structure mod_httapi reads.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.freeswitch.codec import (
    CONTENT_TYPE,
    INPUT_NAME,
    CodecError,
    Recognized,
    RenderOptions,
    Transfers,
    parse_recognizer,
    parse_request,
    render,
    render_ok,
    valid_extension,
)
from gateway.calls.events import CallEnded, CallStarted, DigitsEntered, NoInput, UserSaid
from gateway.dialogue.operations import Action, Reply

GOLDEN = Path(__file__).parent / "golden"

# §7, request 1, exactly as FreeSWITCH 1.10.12 sent it (GET, the query string).
CAPTURED_QUERY = "session_id=e860639e-1726-4c19-aab1-8cf9d1e54780&url=http%3A//127.0.0.1%3A8099/fs/httapi&hostname=vm&Caller-Direction=inbound&Caller-Logical-Direction=inbound&Caller-Dialplan=xml&Caller-Caller-ID-Name=SmokeTest&Caller-Caller-ID-Number=1000&Caller-Orig-Caller-ID-Name=SmokeTest&Caller-Orig-Caller-ID-Number=1000&Caller-Callee-ID-Name=Outbound%20Call&Caller-Callee-ID-Number=default&Caller-ANI=1000&Caller-Destination-Number=5000&Caller-Unique-ID=e860639e-1726-4c19-aab1-8cf9d1e54780&Caller-Source=mod_loopback&Caller-Context=default&Caller-Channel-Name=loopback/5000-b&Caller-Profile-Index=1&Caller-Profile-Created-Time=1795318951519486&Caller-Channel-Created-Time=1795318951519486&Caller-Channel-Answered-Time=1795318951519486&Caller-Channel-Progress-Time=0&Caller-Channel-Progress-Media-Time=0&Caller-Channel-Hangup-Time=0&Caller-Channel-Transfer-Time=0&Caller-Channel-Resurrect-Time=0&Caller-Channel-Bridged-Time=0&Caller-Channel-Last-Hold=0&Caller-Channel-Hold-Accum=0&Caller-Screen-Bit=true&Caller-Privacy-Hide-Name=false&Caller-Privacy-Hide-Number=false"
CALL_ID = "e860639e-1726-4c19-aab1-8cf9d1e54780"
# §1.7, turn 1 (POST, urlencoded), without the document's "…" elisions.
POST_BODY = "session_id=5d1e-uuid&url=http%3A//gw%3A8080/fs/httapi&method=POST&hostname=fs1&Caller-Direction=inbound&Caller-Logical-Direction=inbound&Caller-Username=1000&Caller-Dialplan=XML&Caller-Caller-ID-Name=Alice&Caller-Caller-ID-Number=1000&Caller-Destination-Number=5000&Caller-Unique-ID=5d1e-uuid&Caller-Source=mod_sofia&Caller-Context=default&Caller-Channel-Name=sofia/internal/1000%40example.com"


def fields(query: str) -> dict[str, str]:
    """Decode like the transport: every pair, blank values kept, the last of a repeated name."""
    return dict(parse_qsl(query, keep_blank_values=True))


# -- requests -----------------------------------------------------------------


def test_parse_request_captured_first_request_starts_the_call() -> None:
    parsed = parse_request(fields(CAPTURED_QUERY), "demo")
    assert parsed.turn is None and parsed.instance_id == "demo"
    assert parsed.event == CallStarted(CALL_ID, "demo", "1000", "5000", {})
    assert isinstance(parsed.event, CallStarted)
    assert not any(
        k.startswith("Caller-") or k in ("url", "hostname") for k in parsed.event.context
    )


def test_parse_request_captured_digits_and_exit() -> None:
    digits = parse_request(
        fields(CAPTURED_QUERY + "&ivrgw_turn=1&ivrgw_input=12&input_type=dtmf"), "demo"
    )
    assert digits.event == DigitsEntered(CALL_ID, "12") and digits.turn == 1
    ended = parse_request(fields(CAPTURED_QUERY + "&ivrgw_turn=1&exiting=true"), "demo")
    assert ended.event == CallEnded(CALL_ID, "NORMAL_CLEARING") and ended.turn == 1


def test_parse_request_post_body_and_dialplan_params() -> None:
    parsed = parse_request(fields(POST_BODY), "demo")
    assert parsed.event == CallStarted("5d1e-uuid", "demo", "1000", "5000", {})
    # {instance=bank,lang=zh,url=...}: instance picks the instance, lang is context.
    own = parse_request(fields(POST_BODY + "&instance=bank&lang=zh&ivrgw_x=1&variable_foo=2"), "")
    assert own.instance_id == "bank"
    assert isinstance(own.event, CallStarted) and own.event.context == {"lang": "zh"}


def test_parse_request_calling_falls_back_to_ani_then_empty() -> None:
    base = {"session_id": "s", "Caller-ANI": "8001"}
    assert parse_request(base, "demo").event == CallStarted("s", "demo", "8001", "", {})
    assert parse_request({"session_id": "s"}, "demo").event == CallStarted("s", "demo", "", "", {})


def test_parse_request_context_is_capped_not_refused() -> None:
    many = {"session_id": "s", **{f"k{i:03}": "v" for i in range(100)}}
    many["x" * 65] = "long key"
    many["big"] = "v" * 1025
    event = parse_request(many, "demo").event
    assert isinstance(event, CallStarted)
    assert list(event.context) == [f"k{i:03}" for i in range(64)]


@pytest.mark.parametrize(
    ("extra", "event"),
    [
        ({"ivrgw_input": "1234#", "input_type": "dtmf"}, DigitsEntered("s", "1234")),
        ({"ivrgw_input": "*0", "input_type": "dtmf"}, DigitsEntered("s", "*0")),
        ({"ivrgw_input": "12x", "input_type": "dtmf"}, DigitsEntered("s", "")),
        ({"ivrgw_input": "1" * 33, "input_type": "dtmf"}, DigitsEntered("s", "")),
        ({"ivrgw_input": "#", "input_type": "dtmf"}, DigitsEntered("s", "")),
        ({"ivrgw_input": "invalid", "input_type": "invalid"}, NoInput("s")),
        ({}, NoInput("s")),
        ({"input_type": "something"}, NoInput("s")),
        (
            {"ivrgw_input": "yes please", "input_type": "detected_speech"},
            UserSaid("s", "yes please"),
        ),
        (
            {"ivrgw_input": "<result><noinput/></result>", "input_type": "detected_speech"},
            NoInput("s"),
        ),
        (
            {"ivrgw_input": "Completion-Cause: 001", "input_type": "detected_speech"},
            UserSaid("s", ""),
        ),
        ({"exiting": "true", "hangup_cause": "USER_BUSY"}, CallEnded("s", "USER_BUSY")),
        ({"exiting": "true", "variable_hangup_cause": "NO_ANSWER"}, CallEnded("s", "NO_ANSWER")),
        ({"exiting": "true", "hangup_cause": "bad cause"}, CallEnded("s", "NORMAL_CLEARING")),
    ],
)
def test_parse_request_later_turns(extra: dict[str, str], event: object) -> None:
    parsed = parse_request({"session_id": "s", "ivrgw_turn": "7", **extra}, "demo")
    assert parsed.event == event and parsed.turn == 7


@pytest.mark.parametrize(
    ("given_fields", "default", "code"),
    [
        ({}, "demo", "MissingSessionId"),
        ({"session_id": ""}, "demo", "MissingSessionId"),
        ({"session_id": "s" * 257}, "demo", "InvalidSessionId"),
        ({"session_id": "a\nb"}, "demo", "InvalidSessionId"),
        ({"session_id": "s"}, "", "MissingInstance"),
        ({"session_id": "s", "instance": ""}, "", "MissingInstance"),
        ({"session_id": "s", "ivrgw_turn": "one"}, "demo", "InvalidTurn"),
        ({"session_id": "s", "ivrgw_turn": ""}, "demo", "InvalidTurn"),
        ({"session_id": "s", "ivrgw_turn": "-1"}, "demo", "InvalidTurn"),
        ({"session_id": "s", "ivrgw_turn": "١"}, "demo", "InvalidTurn"),
    ],
)
def test_parse_request_refusals(given_fields: dict[str, str], default: str, code: str) -> None:
    with pytest.raises(CodecError) as caught:
        parse_request(given_fields, default)
    assert caught.value.code == code and caught.value.message


# -- recognizer results -----------------------------------------------------

NLSML = """<?xml version="1.0" encoding="UTF-8"?>
<result xmlns="http://www.ietf.org/xml/ns/mrcpv2" grammar="session:request1@form-level.store">
  <interpretation grammar="session:request1@form-level.store" confidence="0.85">
    <instance>yes</instance>
    <input mode="speech">yes
       please</input>
  </interpretation>
  <interpretation confidence="0.10"><input mode="speech">guess</input></interpretation>
</result>"""
POCKETSPHINX = '<result grammar="g"><interpretation grammar="g" confidence="85"><input mode="speech">yes</input></interpretation></result>'
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<result><interpretation><input>&lol3;</input></interpretation></result>"""
SPEECH: Final = "speech"
NOMATCH: Final = "nomatch"
NOINPUT: Final = "noinput"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (NLSML, Recognized(SPEECH, "yes please", 0.85)),
        (POCKETSPHINX, Recognized(SPEECH, "yes", 0.85)),
        (
            '<result><interpretation confidence="100"><input>ok</input></interpretation></result>',
            Recognized(SPEECH, "ok", 1.0),
        ),
        (
            '<result><interpretation><input confidence="0.5">ok</input></interpretation></result>',
            Recognized(SPEECH, "ok", 0.5),
        ),
        (
            '<result><interpretation confidence="250"><input>ok</input></interpretation></result>',
            Recognized(SPEECH, "ok", None),
        ),
        (
            '<result><interpretation confidence="nan"><input>ok</input></interpretation></result>',
            Recognized(SPEECH, "ok", None),
        ),
        (
            '<result><interpretation confidence="-1"><input>ok</input></interpretation></result>',
            Recognized(SPEECH, "ok", None),
        ),
        (
            "<result><interpretation><input>你好</input></interpretation></result>",
            Recognized(SPEECH, "你好", None),
        ),
        ("<result><noinput/></result>", Recognized(NOINPUT, "", None)),
        ("<noinput/>", Recognized(NOINPUT, "", None)),
        (
            '<m:result xmlns:m="http://www.ietf.org/xml/ns/mrcpv2"><m:interpretation><m:input><m:noinput/></m:input></m:interpretation></m:result>',
            Recognized(NOINPUT, "", None),
        ),
        ("<nomatch/>", Recognized(NOMATCH, "", None)),
        (
            '<result><interpretation confidence="0"><input><nomatch/></input></interpretation></result>',
            Recognized(NOMATCH, "", None),
        ),
        (
            "<result><interpretation><input>  </input></interpretation></result>",
            Recognized(NOMATCH, "", None),
        ),
        (
            "<result><interpretation><instance>x</instance></interpretation></result>",
            Recognized(NOMATCH, "", None),
        ),
        ("<html><body>oops</body></html>", Recognized(NOMATCH, "", None)),
        ("Completion-Cause: 001", Recognized(NOMATCH, "", None)),
        ("Completion-Cause: 002", Recognized(NOINPUT, "", None)),
        ("completion-cause: 002,Waveform-URI: http://x/a.wav", Recognized(NOINPUT, "", None)),
        ("Completion-Cause: 015", Recognized(NOMATCH, "", None)),
        ("Completion-Cause: 006", Recognized(NOMATCH, "", None)),
        ("  I want my balance \n", Recognized(SPEECH, "I want my balance", None)),
        ("", Recognized(NOINPUT, "", None)),
        ("   ", Recognized(NOINPUT, "", None)),
        ("<result><interpretation>", Recognized(NOMATCH, "", None)),
        ("<result>&undefined;</result>", Recognized(NOMATCH, "", None)),
        (BILLION_LAUGHS, Recognized(NOMATCH, "", None)),
        ('<!doctype r SYSTEM "file:///etc/passwd"><r/>', Recognized(NOMATCH, "", None)),
        ("<result>" + "<a>x</a>" * 3000 + "</result>", Recognized(NOMATCH, "", None)),
        ("yes " * 5000, Recognized(NOMATCH, "", None)),
        ("yes \ud800", Recognized(NOMATCH, "", None)),
    ],
)
def test_parse_recognizer_forms(raw: str, expected: Recognized) -> None:
    assert parse_recognizer(raw) == expected


XML_PIECES = st.sampled_from(
    [
        "<result>", "</result>", '<interpretation confidence="85">', "</interpretation>",
        "<input>", "</input>", "<noinput/>", "<nomatch/>", "&amp;", "&lol;", "<!DOCTYPE x>",
        '<?xml version="1.0"?>', "<![CDATA[x]]>", "<!-- c -->", "yes", " ", "\x00", "\ud800",
        'xmlns="http://www.ietf.org/xml/ns/mrcpv2"', "Completion-Cause: ", "002", "<", ">",
    ]
)  # fmt: skip


@settings(max_examples=300)
@given(st.one_of(st.text(), st.lists(XML_PIECES, max_size=20).map("".join)))
def test_parse_recognizer_never_raises(raw: str) -> None:
    result = parse_recognizer(raw)
    assert result.kind in (SPEECH, NOMATCH, NOINPUT)
    assert result.confidence is None or 0 <= result.confidence <= 1
    assert (result.kind == SPEECH) == bool(result.text)


FIELD_NAMES = st.one_of(
    st.sampled_from(
        [
            "session_id",
            "instance",
            "ivrgw_turn",
            "exiting",
            "input_type",
            INPUT_NAME,
            "hangup_cause",
            "Caller-ANI",
        ]
    ),
    st.text(max_size=70),
)
FIELD_VALUES = st.one_of(
    st.sampled_from(["true", "dtmf", "detected_speech", "invalid", "1", "12#", "<noinput/>"]),
    st.text(max_size=1100),
)


@settings(max_examples=300)
@given(st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=12), st.sampled_from(["", "demo"]))
def test_parse_request_raises_only_codec_error(given_fields: dict[str, str], default: str) -> None:
    try:
        parsed = parse_request(given_fields, default)
    except CodecError as exc:
        assert exc.code in (
            "MissingSessionId",
            "InvalidSessionId",
            "MissingInstance",
            "InvalidTurn",
        )
    else:
        assert parsed.event.call_id == given_fields["session_id"]


# -- documents ----------------------------------------------------------------

TRANSFERS = Transfers(agents={"support": "1001", "sales": "1002"}, ivrs={"billing": "6000"})
PARAMS = {"ivrgw_turn": "2", "instance": "demo"}
OPTS = RenderOptions(engine="flite", voice="slt", params=PARAMS, transfers=TRANSFERS)
MRCP = RenderOptions(
    engine="unimrcp",
    voice="xiaoyun",
    params=PARAMS,
    transfers=TRANSFERS,
    asr_engine="unimrcp",
    asr_grammar="builtin:grammar/boolean",
)
MENU = "Welcome. For sales press 1. For support press 2."
AGENT = Action.TRANSFER_TO_AGENT

CASES: dict[str, tuple[Reply, RenderOptions]] = {
    "broadcast_interruptible": (Reply(MENU), OPTS),
    "broadcast_pause": (
        Reply("Please listen to the whole menu.", interruptible=False, wait_seconds=5),
        OPTS,
    ),
    "transfer_dial": (
        Reply("Connecting you to support.", AGENT, False, '{"skillGroupId":"support"}', 0),
        OPTS,
    ),
    "transfer_execute": (
        Reply("Connecting you to support.", AGENT, False, '{"skillGroupId":"support"}', 0),
        RenderOptions(
            "flite",
            "slt",
            PARAMS,
            Transfers(TRANSFERS.agents, TRANSFERS.ivrs, mode="execute", context="public"),
        ),
    ),
    "transfer_ivr": (
        Reply(
            "Transferring you to billing.", Action.TRANSFER_TO_IVR, False, '{"route":"billing"}', 0
        ),
        OPTS,
    ),
    "transfer_unknown_default": (
        Reply("Connecting you to an agent.", AGENT, False, '{"skillGroupId":"vip"}', 0),
        RenderOptions(
            "flite", "slt", PARAMS, Transfers(TRANSFERS.agents, {}, default_agent="1000")
        ),
    ),
    "transfer_unknown_hangup": (
        Reply("Connecting you to an agent.", AGENT, False, '{"skillGroupId":"vip"}', 0),
        OPTS,
    ),
    "hangup_cause": (Reply("Goodbye.", Action.HANG_UP, False, '{"cause":"USER_BUSY"}', 0), OPTS),
    "playback": (Reply("ivr/ivr-welcome_to_freeswitch.wav", wait_seconds=8), OPTS),
    "asr": (Reply("Say yes or no.", wait_seconds=6), MRCP),
    "asr_not_interruptible": (Reply("Say yes or no.", interruptible=False, wait_seconds=6), MRCP),
    "escaping": (
        Reply(
            "He said \"yes\" <loudly> & left.\nThen \r\n\t'nothing'\x00\x07.",
            Action.HANG_UP,
            False,
            "{}",
            0,
        ),
        OPTS,
    ),
    "chinese": (
        Reply("您好，欢迎致电演示银行。查询余额请按1，人工服务请按0。"),
        RenderOptions("unimrcp", "xiaoyun", PARAMS, TRANSFERS),
    ),
}

# What mod_httapi binds (§1.4), and the tags that take input attributes and binds.
WORK_TAGS = {"playback", "speak", "pause", "dial", "execute", "hangup", "continue"}
INPUT_TAGS = {"playback", "speak", "pause"}


def check_structure(document: bytes) -> list[ET.Element]:
    """The rules mod_httapi's parser holds a document to; returns the work tags."""
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(document)
    assert root.tag == "document" and root.get("type") == "xml/freeswitch-httapi"
    sections = [child.tag for child in root]
    assert sections[0] == "params" and sections[-1] == "work"
    work = list(root.find("work") or [])
    assert work, "an empty <work> ends httapi"
    for tag in work:
        assert tag.tag in WORK_TAGS
        binds = tag.findall("bind")
        if binds:
            assert tag.tag in INPUT_TAGS and tag.get("name") == INPUT_NAME
            assert tag.get("terminators") == "#" and tag.get("digit-timeout")
            exact = [b.text for b in binds if not (b.text or "").startswith("~")]
            assert exact == [*"0123456789", "*"]
            assert binds[-1].get("strip") == "#" and (binds[-1].text or "").startswith(
                "~^[0-9*]{1,"
            )
        if tag.tag == "speak":
            assert tag.get("engine") and tag.get("text")
        if tag.tag == "playback":
            assert tag.get("file")
            # ASR runs only on <playback>, and needs both attributes.
            assert (tag.get("asr-engine") is None) == (tag.get("asr-grammar") is None)
        if tag.tag in ("speak", "pause"):
            assert tag.get("asr-engine") is None
    # Whatever the caller hears comes before what ends or moves the call.
    enders = [i for i, tag in enumerate(work) if tag.tag in ("dial", "execute", "hangup")]
    assert enders in ([], [len(work) - 1])
    return work


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_golden(name: str) -> None:
    reply, opts = CASES[name]
    document = render(reply, opts)
    assert document == (GOLDEN / f"{name}.xml").read_bytes()
    check_structure(document)


def test_render_golden_files_all_have_a_case() -> None:
    assert {p.stem for p in GOLDEN.glob("*.xml")} == set(CASES)


def test_render_interruptible_prompt_listens_itself() -> None:
    (prompt,) = check_structure(render(Reply(MENU, wait_seconds=7), OPTS))
    assert prompt.tag == "speak" and prompt.get("input-timeout") == "7000"
    assert prompt.get("text") == MENU


def test_render_not_interruptible_prompt_then_pause() -> None:
    prompt, wait = check_structure(render(Reply(MENU, interruptible=False, wait_seconds=4), OPTS))
    assert prompt.tag == "speak" and not list(prompt) and prompt.get("name") is None
    assert (
        wait.tag == "pause"
        and wait.get("milliseconds") == "4000"
        and wait.get("name") == INPUT_NAME
    )


def test_render_asr_uses_playback_and_tts_variables() -> None:
    root = ET.fromstring(render(Reply("Say yes or no.", wait_seconds=6), MRCP))
    variables = root.find("variables")
    assert variables is not None
    assert {v.tag: v.text for v in variables} == {"tts_engine": "unimrcp", "tts_voice": "xiaoyun"}
    (prompt,) = check_structure(render(Reply("Say yes or no.", wait_seconds=6), MRCP))
    assert prompt.tag == "playback" and prompt.get("file") == "say:Say yes or no."
    # An audio prompt needs no TTS variables.
    audio = ET.fromstring(render(Reply("/var/sounds/menu.wav", wait_seconds=6), MRCP))
    assert audio.find("variables") is None


@pytest.mark.parametrize(
    ("reply", "tags"),
    [
        (Reply("Hello.", wait_seconds=0), ["speak"]),
        (Reply("Hello.", Action.REDIRECT_TO_PAGE, wait_seconds=0), ["speak"]),
        (Reply("", wait_seconds=5), ["pause"]),
        (Reply("", interruptible=False, wait_seconds=5), ["pause"]),
        (Reply("", wait_seconds=0), ["continue"]),
        (Reply("", Action.HANG_UP, wait_seconds=0), ["hangup"]),
        (Reply("", AGENT, action_params='{"skillGroupId":"sales"}', wait_seconds=0), ["dial"]),
        (Reply("Bye.", Action.HANG_UP, wait_seconds=10), ["speak", "hangup"]),
    ],
)
def test_render_shapes(reply: Reply, tags: list[str]) -> None:
    assert [tag.tag for tag in check_structure(render(reply, OPTS))] == tags


@pytest.mark.parametrize(
    ("action_params", "body"),
    [
        ('{"skillGroupId":"sales"}', "1002"),
        ('{"skillGroupId":1}', None),
        ("[1, 2]", None),
        ("not json", None),
        ('{"skillGroupId":"support","route":"billing"}', "1001"),
    ],
)
def test_render_agent_destination(action_params: str, body: str | None) -> None:
    last = check_structure(render(Reply("x", AGENT, False, action_params, 0), OPTS))[-1]
    if body is None:
        assert last.tag == "hangup" and last.get("cause") == "NORMAL_CLEARING"
    else:
        assert last.tag == "dial" and last.text == body


@pytest.mark.parametrize(
    ("action_params", "body"),
    [
        ('{"ivr":"billing"}', "6000"),
        ('{"ivrName":"billing"}', "6000"),
        ('{"route":"nowhere"}', "7000"),
        ("{}", "7000"),
    ],
)
def test_render_ivr_destination(action_params: str, body: str) -> None:
    opts = RenderOptions("flite", "slt", PARAMS, Transfers({}, TRANSFERS.ivrs, default_ivr="7000"))
    last = check_structure(
        render(Reply("x", Action.TRANSFER_TO_IVR, False, action_params, 0), opts)
    )[-1]
    assert last.tag == "dial" and last.text == body


@pytest.mark.parametrize(
    ("action_params", "opts_cause", "cause"),
    [
        ('{"cause":"CALL_REJECTED"}', "NORMAL_CLEARING", "CALL_REJECTED"),
        ('{"cause":"bad cause"}', "USER_BUSY", "USER_BUSY"),
        ('{"cause":7}', "USER_BUSY", "USER_BUSY"),
        ("{}", "not a cause", "NORMAL_CLEARING"),
    ],
)
def test_render_hangup_cause(action_params: str, opts_cause: str, cause: str) -> None:
    opts = RenderOptions("flite", "slt", PARAMS, TRANSFERS, hangup_cause=opts_cause)
    last = check_structure(render(Reply("Bye.", Action.HANG_UP, False, action_params, 0), opts))[-1]
    assert last.get("cause") == cause


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("ivr/ivr-welcome.wav", "playback"),
        ("/usr/share/freeswitch/sounds/menu.WAV", "playback"),
        ("prompts/欢迎.mp3", "playback"),
        ("https://cdn.example.com/prompts/menu?id=3", "playback"),
        ("http://cdn.example.com/a.ulaw", "playback"),
        ("file_string://a.wav!b.wav", "playback"),
        ("tone_stream://%(200,0,800)", "playback"),
        ("silence_stream://1000", "playback"),
        ("menu.wav please", "speak"),
        ("Your file is report.wav", "speak"),
        ("$${sounds_dir}/menu.wav", "speak"),
        ("/help", "speak"),
        ("menu.txt", "speak"),
        ("Goodbye.", "speak"),
    ],
)
def test_render_audio_rule(text: str, tag: str) -> None:
    (prompt,) = check_structure(render(Reply(text, wait_seconds=3), OPTS))
    assert prompt.tag == tag
    assert prompt.get("file" if tag == "playback" else "text") == text


def test_render_params_skip_unsafe_names_and_clamp_limits() -> None:
    params = {"ivrgw_turn": "3", "bad-key": "x", "1st": "y", "note": "a<b&c"}
    opts = RenderOptions("flite", "", params, TRANSFERS, digit_timeout_ms=0, max_digits=99)
    root = ET.fromstring(render(Reply("Hi."), opts))
    params_tag = root.find("params")
    assert params_tag is not None
    assert {p.tag: p.text for p in params_tag} == {"ivrgw_turn": "3", "note": "a<b&c"}
    (prompt,) = check_structure(render(Reply("Hi."), opts))
    assert prompt.get("voice") is None and prompt.get("digit-timeout") == "1"
    assert prompt.findall("bind")[-1].text == "~^[0-9*]{1,32}#?$"
    empty = ET.fromstring(render(Reply("Hi."), RenderOptions("flite", "slt", {}, TRANSFERS)))
    assert empty.find("params") is not None and not list(empty.find("params") or [])


@settings(max_examples=200)
@given(st.text(max_size=300), st.sampled_from(list(Action)), st.booleans(), st.integers(0, 30))
def test_render_any_text_is_well_formed(
    text: str, action: Action, interruptible: bool, wait: int
) -> None:
    document = render(Reply(text, action, interruptible, '{"skillGroupId":"support"}', wait), OPTS)
    work = check_structure(document)
    spoken = [
        tag.get("text") or tag.get("file") for tag in work if tag.tag in ("speak", "playback")
    ]
    for value in spoken:
        assert value and value == value.strip() and "\n" not in value


def test_transfers_refuse_bad_config() -> None:
    with pytest.raises(ValueError, match="mode"):
        Transfers({}, {}, mode="bridge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        Transfers({}, {}, context="de fault")
    with pytest.raises(ValueError, match="support"):
        Transfers({"support": "10 01"}, {})
    with pytest.raises(ValueError, match="default_ivr"):
        Transfers({}, {}, default_ivr="${evil}")
    assert valid_extension("1001") and valid_extension("+8613800000000") and not valid_extension("")


def test_render_ok_and_content_type() -> None:
    assert render_ok() == ("text/plain", b"OK")
    # mod_httapi accepts a response only when its Content-Type contains text/xml (§1.3).
    assert "text/xml" in CONTENT_TYPE

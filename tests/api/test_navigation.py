"""Navigation and TTS config actions (seed §9, §10) and auditions, against a real gateway."""

from __future__ import annotations

import http.client
import io
import sqlite3
import time
import tomllib
import wave
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.api.links import Links
from gateway.store.catalog import NAVIGATION_TABLES
from tests.api.managed import home, ok, refused
from tests.conftest import (
    DEMO,
    RO_KEY_ID,
    RO_SECRET,
    Client,
    GatewayProcess,
    Response,
    conversation_id,
)


@pytest.fixture
def instance(client: Client) -> str:
    """A fresh instance with CreateInstance's default config."""
    r = client.call(
        {"Action": "CreateInstance", "Name": f"nav {time.monotonic_ns()}", "Concurrency": "10"}
    )
    assert r.status == 200, r.body
    return str(r.json["InstanceId"])


def navigation(c: Client, instance: str) -> dict[str, Any]:
    return ok(c.call({"Action": "DescribeNavigationConfig", "InstanceId": instance}))


def modify(c: Client, action: str, instance: str, **params: str) -> Response:
    return c.call({"Action": action, "InstanceId": instance, **params})


def begin(c: Client, instance: str, conv: str) -> dict[str, Any]:
    return ok(
        c.call(
            {
                "Action": "BeginDialogue",
                "InstanceId": instance,
                "ConversationId": conv,
                "CallingNumber": "13800000000",
            }
        )
    )


def say(c: Client, instance: str, conv: str, utterance: str) -> dict[str, Any]:
    return ok(
        c.call(
            {
                "Action": "Dialogue",
                "InstanceId": instance,
                "ConversationId": conv,
                "Utterance": utterance,
            }
        )
    )


# -- DescribeNavigationConfig -----------------------------------------------------


def test_describe_navigation_config_has_the_seeds_shape_and_types(client: Client) -> None:
    d = navigation(client, "demo")
    file = tomllib.loads(DEMO.read_text(encoding="utf-8"))
    assert set(d) == {"RequestId", *NAVIGATION_TABLES}
    assert d["GreetingConfig"] == {
        "GreetingWords": file["GreetingConfig"]["GreetingWords"],
        "SourceType": "fixed",
        "IntentTrigger": "",
        "Interruptible": True,
    }
    assert d["UnrecognizingConfig"] == file["UnrecognizingConfig"]
    assert d["RepeatingConfig"] == file["RepeatingConfig"]
    assert d["AskingBackConfig"] == file["AskingBackConfig"]
    assert d["SilenceTimeoutConfig"] == {
        **file["SilenceTimeoutConfig"],
        "SourceType": "fixed",
        "IntentTrigger": "",
    }
    complaining = file["ComplainingConfig"]
    assert d["ComplainingConfig"] == {
        **complaining,
        "FinalAction": complaining["Action"],
        "FinalActionParams": complaining["ActionParams"],
    }
    assert d["FallbackConfig"]["TurnBudget"] == 1500
    s = d["SilenceTimeoutConfig"]
    assert isinstance(s["Timeout"], int) and isinstance(s["Threshold"], int)
    assert isinstance(s["FinalActionParams"], str)
    assert d["AskingBackConfig"]["Enabled"] is True


def test_describe_navigation_config_of_a_new_instance(client: Client, instance: str) -> None:
    d = navigation(client, instance)
    assert d["AskingBackConfig"]["Enabled"] is False
    assert d["AskingBackConfig"]["Prompt"] == ""
    assert d["UnrecognizingConfig"]["Threshold"] == 3
    assert d["SilenceTimeoutConfig"]["FinalAction"] == "HangUp"


# -- the Modify*Config actions ----------------------------------------------------------


def test_modify_greeting_config(client: Client, instance: str) -> None:
    ok(modify(client, "ModifyGreetingConfig", instance, GreetingWords="Hi ${name}"))
    assert navigation(client, instance)["GreetingConfig"]["GreetingWords"] == "Hi ${name}"
    ok(
        modify(
            client,
            "ModifyGreetingConfig",
            instance,
            GreetingWords="Hello",
            SourceType="chatbotIntent",
            IntentTrigger="welcome",
            Interruptible="true",
        )
    )
    g = navigation(client, instance)["GreetingConfig"]
    assert g == {
        "GreetingWords": "Hello",
        "SourceType": "chatbotIntent",
        "IntentTrigger": "welcome",
        "Interruptible": True,
    }
    # chatbotIntent without an intent is refused, naming the parameter.
    r = modify(client, "ModifyGreetingConfig", instance, GreetingWords="x", IntentTrigger="")
    assert "IntentTrigger" in refused(r, 400, "InvalidParameter")
    r = modify(client, "ModifyGreetingConfig", instance, GreetingWords="x", SourceType="other")
    assert "SourceType" in refused(r, 400, "InvalidParameter")
    refused(modify(client, "ModifyGreetingConfig", instance), 400, "MissingGreetingWords")
    refused(
        modify(client, "ModifyGreetingConfig", instance, GreetingWords="  "),
        400,
        "MissingGreetingWords",
    )
    assert navigation(client, instance)["GreetingConfig"] == g


def test_modify_unrecognizing_config_keeps_what_is_left_out(client: Client, instance: str) -> None:
    ok(
        modify(
            client,
            "ModifyUnrecognizingConfig",
            instance,
            Prompt="Pardon?",
            Threshold="2",
            FinalPrompt="Bye",
            FinalAction="HangUp",
            FinalActionParams='{"cause": "unrecognized"}',
        )
    )
    ok(
        modify(
            client,
            "ModifyUnrecognizingConfig",
            instance,
            Prompt="Sorry?",
            Threshold="4",
            FinalPrompt="Bye now",
            FinalAction="TransferToIVR",
        )
    )
    assert navigation(client, instance)["UnrecognizingConfig"] == {
        "Prompt": "Sorry?",
        "Threshold": 4,
        "FinalPrompt": "Bye now",
        "FinalAction": "TransferToIVR",
        "FinalActionParams": '{"cause": "unrecognized"}',
    }


def test_modify_silence_timeout_config(client: Client, instance: str) -> None:
    ok(
        modify(
            client,
            "ModifySilenceTimeoutConfig",
            instance,
            Prompt="Still there?",
            Timeout="20",
            Threshold="2",
            FinalPrompt="Goodbye",
            FinalAction="TransferToAgent",
            FinalActionParams='{"skillGroupId": "s"}',
            SourceType="chatbotIntent",
            IntentTrigger="Timeout",
        )
    )
    assert navigation(client, instance)["SilenceTimeoutConfig"] == {
        "Prompt": "Still there?",
        "Timeout": 20,
        "Threshold": 2,
        "FinalPrompt": "Goodbye",
        "FinalAction": "TransferToAgent",
        "FinalActionParams": '{"skillGroupId": "s"}',
        "SourceType": "chatbotIntent",
        "IntentTrigger": "Timeout",
    }
    conv = conversation_id()
    begin(client, instance, conv)
    silence = {"Action": "SilenceTimeout", "InstanceId": instance, "ConversationId": conv}
    assert ok(client.call(silence))["TextResponse"] == "Still there?"
    final = ok(client.call(silence))
    assert (final["Action"], final["TextResponse"]) == ("TransferToAgent", "Goodbye")


def test_modify_repeating_config_takes_a_json_array_or_numbered_items(
    client: Client, instance: str
) -> None:
    ok(modify(client, "ModifyRepeatingConfig", instance, Utterances='["again", "once more"]'))
    assert navigation(client, instance)["RepeatingConfig"] == {"Utterances": ["again", "once more"]}
    params = {"Utterances.1": "one", "Utterances.2": "two", "Utterances.10": "ten"}
    ok(modify(client, "ModifyRepeatingConfig", instance, **params))
    assert navigation(client, instance)["RepeatingConfig"]["Utterances"] == ["one", "two", "ten"]
    ok(modify(client, "ModifyRepeatingConfig", instance, Utterances="[]"))
    assert navigation(client, instance)["RepeatingConfig"]["Utterances"] == []
    refused(modify(client, "ModifyRepeatingConfig", instance), 400, "MissingUtterances")


def test_modify_asking_back_config(client: Client, instance: str) -> None:
    r = modify(client, "ModifyAskingBackConfig", instance, Enabled="true")
    assert "Prompt" in refused(r, 400, "InvalidParameter")
    ok(
        modify(
            client,
            "ModifyAskingBackConfig",
            instance,
            Enabled="true",
            Prompt="Anything else?",
            EnableNegativeFeedback="true",
            NegativeFeedbackUtterances='["no", "nothing"]',
            NegativeFeedbackPrompt="Thanks, bye",
            NegativeFeedbackAction="HangUp",
            NegativeFeedbackActionParams="{}",
        )
    )
    assert navigation(client, instance)["AskingBackConfig"] == {
        "Enabled": True,
        "Prompt": "Anything else?",
        "EnableNegativeFeedback": True,
        "NegativeFeedbackUtterances": ["no", "nothing"],
        "NegativeFeedbackPrompt": "Thanks, bye",
        "NegativeFeedbackAction": "HangUp",
        "NegativeFeedbackActionParams": "{}",
    }
    ok(modify(client, "ModifyAskingBackConfig", instance, Enabled="false"))
    a = navigation(client, instance)["AskingBackConfig"]
    assert a["Enabled"] is False and a["Prompt"] == "Anything else?"


def test_modify_complaining_config(client: Client, instance: str) -> None:
    ok(
        modify(
            client,
            "ModifyComplainingConfig",
            instance,
            Utterances='["manager"]',
            Prompt="Putting you through",
            FinalAction="TransferToAgent",
            FinalActionParams='{"skillGroupId": "managers"}',
        )
    )
    c = navigation(client, instance)["ComplainingConfig"]
    assert c["Utterances"] == ["manager"] and c["Prompt"] == "Putting you through"
    assert c["ActionParams"] == c["FinalActionParams"] == '{"skillGroupId": "managers"}'
    conv = conversation_id()
    begin(client, instance, conv)
    reply = say(client, instance, conv, "Manager!")
    assert (reply["Action"], reply["TextResponse"]) == ("TransferToAgent", "Putting you through")
    assert reply["ActionParams"] == '{"skillGroupId": "managers"}'


@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("ModifyUnrecognizingConfig", {"Threshold": "0"}, "Threshold"),
        ("ModifyUnrecognizingConfig", {"Threshold": "101"}, "Threshold"),
        ("ModifyUnrecognizingConfig", {"Threshold": "two"}, "Threshold"),
        ("ModifyUnrecognizingConfig", {"FinalAction": "Dance"}, "FinalAction"),
        ("ModifyUnrecognizingConfig", {"FinalActionParams": "{nope"}, "FinalActionParams"),
        ("ModifyUnrecognizingConfig", {"FinalActionParams": "[1]"}, "FinalActionParams"),
        ("ModifyUnrecognizingConfig", {"Prompt": "x" * 2001}, "Prompt"),
        ("ModifySilenceTimeoutConfig", {"Timeout": "0"}, "Timeout"),
        ("ModifySilenceTimeoutConfig", {"Timeout": "601"}, "Timeout"),
        ("ModifySilenceTimeoutConfig", {"SourceType": "robot"}, "SourceType"),
        ("ModifyRepeatingConfig", {"Utterances": "again"}, "Utterances"),
        ("ModifyRepeatingConfig", {"Utterances": '["ok", 3]'}, "Utterances"),
        ("ModifyRepeatingConfig", {"Utterances": '["ok", " "]'}, "Utterances"),
        ("ModifyRepeatingConfig", {"Utterances.x": "a"}, "Utterances"),
        ("ModifyAskingBackConfig", {"Enabled": "maybe"}, "Enabled"),
        ("ModifyAskingBackConfig", {"NegativeFeedbackAction": "Fly"}, "NegativeFeedbackAction"),
        ("ModifyComplainingConfig", {"FinalAction": "Shout"}, "FinalAction"),
        ("ModifyComplainingConfig", {"FinalActionParams": "1"}, "FinalActionParams"),
        ("ModifyTTSConfig", {"SpeechRate": "501"}, "SpeechRate"),
        ("ModifyTTSConfig", {"SpeechRate": "-501"}, "SpeechRate"),
        ("ModifyTTSConfig", {"Volume": "101"}, "Volume"),
        ("ModifyTTSConfig", {"Volume": "-1"}, "Volume"),
        ("ModifyTTSConfig", {"Voice": "v" * 65}, "Voice"),
    ],
)
def test_bad_values_are_invalid_parameter_naming_the_parameter(
    client: Client, action: str, params: dict[str, str], name: str
) -> None:
    base = {
        "ModifyUnrecognizingConfig": {
            "Prompt": "p",
            "Threshold": "3",
            "FinalPrompt": "f",
            "FinalAction": "HangUp",
        },
        "ModifySilenceTimeoutConfig": {
            "Prompt": "p",
            "Timeout": "10",
            "Threshold": "3",
            "FinalPrompt": "f",
            "FinalAction": "HangUp",
        },
        "ModifyRepeatingConfig": {},
        "ModifyAskingBackConfig": {"Enabled": "false", "EnableNegativeFeedback": "true"},
        "ModifyComplainingConfig": {"Utterances": '["x"]', "Prompt": "p"},
        "ModifyTTSConfig": {},
    }[action]
    before = navigation(client, "demo")
    r = modify(client, action, "demo", **{**base, **params})
    message = refused(r, 400, "InvalidParameter")
    assert f"parameter {name} " in message
    after = navigation(client, "demo")
    assert {**after, "RequestId": ""} == {**before, "RequestId": ""}


@pytest.mark.parametrize(
    "action",
    [
        "DescribeNavigationConfig",
        "DescribeTTSConfig",
        "ModifyGreetingConfig",
        "ModifyTTSConfig",
        "ModifyRepeatingConfig",
        "AuditTTSVoice",
    ],
)
def test_unknown_instance_is_not_found(client: Client, action: str) -> None:
    r = client.call(
        {
            "Action": action,
            "InstanceId": "no-such-instance",
            "GreetingWords": "x",
            "Utterances": "[]",
            "Text": "hello",
        }
    )
    refused(r, 404, "InvalidInstanceId.NotFound")


# -- changes and live conversations ---------------------------------------------------


def test_a_change_applies_to_conversations_that_begin_after_it(
    client: Client, instance: str
) -> None:
    live = conversation_id()
    old_greeting = begin(client, instance, live)["TextResponse"]
    old_prompt = navigation(client, instance)["UnrecognizingConfig"]["Prompt"]
    ok(modify(client, "ModifyGreetingConfig", instance, GreetingWords="New greeting"))
    ok(
        modify(
            client,
            "ModifyUnrecognizingConfig",
            instance,
            Prompt="New pardon",
            Threshold="5",
            FinalPrompt="New bye",
            FinalAction="HangUp",
        )
    )
    ok(modify(client, "ModifyRepeatingConfig", instance, Utterances='["what now"]'))
    # The live conversation keeps the config it began with.
    assert say(client, instance, live, "gibberish")["TextResponse"] == old_prompt
    assert say(client, instance, live, "repeat that")["TextResponse"] == old_prompt
    assert say(client, instance, live, "gibberish")["Action"] == "Broadcast"
    assert say(client, instance, live, "gibberish")["Action"] == "TransferToAgent"
    # A new one gets the new config.
    fresh = conversation_id()
    greeting = begin(client, instance, fresh)["TextResponse"]
    assert greeting == "New greeting" != old_greeting
    assert say(client, instance, fresh, "gibberish")["TextResponse"] == "New pardon"
    assert say(client, instance, fresh, "what now")["TextResponse"] == "New pardon"


# -- TTS ---------------------------------------------------------------------------------


def test_describe_and_modify_tts_config(client: Client, instance: str) -> None:
    d = ok(client.call({"Action": "DescribeTTSConfig", "InstanceId": instance}))
    assert {k: d[k] for k in ("Voice", "SpeechRate", "Volume")} == {
        "Voice": "xiaoyun",
        "SpeechRate": 0,
        "Volume": 50,
    }
    ok(modify(client, "ModifyTTSConfig", instance, Voice="aixia", SpeechRate="-150"))
    d = ok(client.call({"Action": "DescribeTTSTConfig", "InstanceId": instance}))
    assert (d["Voice"], d["SpeechRate"], d["Volume"]) == ("aixia", -150, 50)
    ok(modify(client, "ModifyTTSConfig", instance, Volume="100", SpeechRate="500"))
    d = ok(client.call({"Action": "DescribeTTSConfig", "InstanceId": instance}))
    assert (d["Voice"], d["SpeechRate"], d["Volume"]) == ("aixia", 500, 100)
    assert isinstance(d["SpeechRate"], int) and isinstance(d["Volume"], int)


def fetch(port: int, url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, f"{parts.path}?{parts.query}")
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_audit_tts_voice_serves_a_wav_under_a_signed_expiring_link(
    gateway: GatewayProcess, client: Client
) -> None:
    r = ok(
        client.call(
            {
                "Action": "AuditTTSVoice",
                "InstanceId": "demo",
                "Text": "您好，欢迎致电。Hello and welcome.",
                "Voice": "aixia",
                "SpeechRate": "100",
                "Volume": "10",
            }
        )
    )
    url = r["AuditionUrl"]
    parts = urlsplit(url)
    assert url.startswith(f"http://127.0.0.1:{gateway.port}/files/auditions/")
    assert parts.path.endswith(".wav")
    status, headers, body = fetch(gateway.port, url)
    assert status == 200 and headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2) and w.getnframes() > 1000
    name = parts.path.rsplit("/", 1)[1]
    assert (home(gateway) / "var" / "exports" / "auditions" / name).is_file()
    # Another voice or text is another file; the same ones, the same file.
    again = ok(
        client.call(
            {
                "Action": "AuditTTSVoice",
                "InstanceId": "demo",
                "Text": "您好，欢迎致电。Hello and welcome.",
                "Voice": "aixia",
                "SpeechRate": "100",
                "Volume": "10",
            }
        )
    )
    assert urlsplit(again["AuditionUrl"]).path == parts.path
    other = ok(client.call({"Action": "AuditTTSVoice", "InstanceId": "demo", "Text": "Hi"}))
    assert urlsplit(other["AuditionUrl"]).path != parts.path

    query = parse_qs(parts.query)
    tampered = url.replace(
        f"Expires={query['Expires'][0]}", f"Expires={int(query['Expires'][0]) + 1}"
    )
    status, _, body = fetch(gateway.port, tampered)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    sig = query["Signature"][0]
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    status, _, _ = fetch(gateway.port, url.replace(sig, flipped))
    assert status == 403
    # A link signed with the gateway's own key that has expired.
    db = sqlite3.connect(home(gateway) / "var" / "gateway.db")
    try:
        (secret,) = db.execute("SELECT Value FROM meta WHERE Key = 'link_secret'").fetchone()
    finally:
        db.close()
    roots = {"auditions": home(gateway) / "var" / "exports" / "auditions"}
    old = Links(bytes.fromhex(secret), 60, roots, clock=lambda: time.time() - 3600)
    expired = old.url(f"http://127.0.0.1:{gateway.port}", "auditions", name)
    status, _, body = fetch(gateway.port, expired)
    assert status == 403 and b"LinkExpired" in body
    fresh = Links(bytes.fromhex(secret), 60, roots).url(
        f"http://127.0.0.1:{gateway.port}", "auditions", name
    )
    assert fetch(gateway.port, fresh)[0] == 200


def test_audit_tts_voice_refuses_bad_input(client: Client) -> None:
    audit = {"Action": "AuditTTSVoice", "InstanceId": "demo"}
    refused(client.call(audit), 400, "MissingText")
    r = client.call({**audit, "Text": "hi", "Volume": "101"})
    assert "Volume" in refused(r, 400, "InvalidParameter")
    r = client.call({**audit, "Text": "hi", "SpeechRate": "fast"})
    assert "SpeechRate" in refused(r, 400, "InvalidParameter")
    r = client.call({**audit, "Text": "x" * 5001})
    assert "Text" in refused(r, 400, "InvalidParameter")


# -- read-only keys ------------------------------------------------------------------


def test_read_only_key_describes_but_cannot_modify_or_audit(
    gateway: GatewayProcess, client: Client
) -> None:
    before = navigation(client, "demo")
    with Client(gateway.port, RO_KEY_ID, RO_SECRET) as viewer:
        for action in ("DescribeNavigationConfig", "DescribeTTSConfig"):
            ok(viewer.call({"Action": action, "InstanceId": "demo"}))
        for action in (
            "ModifyGreetingConfig",
            "ModifyUnrecognizingConfig",
            "ModifySilenceTimeoutConfig",
            "ModifyRepeatingConfig",
            "ModifyAskingBackConfig",
            "ModifyComplainingConfig",
            "ModifyTTSConfig",
            "AuditTTSVoice",
        ):
            r = viewer.call(
                {"Action": action, "InstanceId": "demo", "GreetingWords": "x", "Text": "x"}
            )
            refused(r, 403, "Forbidden.RAM")
    after = navigation(client, "demo")
    assert {**after, "RequestId": ""} == {**before, "RequestId": ""}

"""The RPC API against a real gateway process on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from tests.conftest import (
    RO_KEY_ID,
    RO_SECRET,
    Client,
    GatewayProcess,
    conversation_id,
    utc_now,
    write_config,
)

BEGIN = {"Action": "BeginDialogue", "InstanceId": "demo", "CallingNumber": "13800000000"}


def begin(client: Client, conv: str, **extra: str) -> dict[str, object]:
    r = client.call({**BEGIN, "ConversationId": conv, **extra})
    assert r.status == 200, r.body
    return r.json  # type: ignore[no-any-return]


def turn(client: Client, action: str, conv: str, **params: str) -> tuple[int, dict[str, object]]:
    r = client.call({"Action": action, "InstanceId": "demo", "ConversationId": conv, **params})
    return r.status, r.json


def test_whole_conversation_with_seed_field_names_and_types(client: Client) -> None:
    conv = conversation_id()
    greeting = begin(
        client, conv, CalledNumber="95555", InitialContext='{"balance": 12.5, "vip": true}'
    )
    assert set(greeting) == {"RequestId", "TextResponse", "Interruptible", "Action", "ActionParams"}
    assert greeting["Action"] == "Broadcast" and greeting["Interruptible"] is True
    assert isinstance(greeting["ActionParams"], str)

    status, answer = turn(client, "Dialogue", conv, Utterance="查询余额")
    assert status == 200 and "12.5元" in str(answer["TextResponse"])

    status, menu = turn(client, "CollectedNumber", conv, Number="0")
    assert status == 200 and menu["Action"] == "TransferToAgent"
    assert orjson.loads(str(menu["ActionParams"])) == {"skillGroupId": "general"}

    for _ in range(3):
        status, quiet = turn(client, "SilenceTimeout", conv)
        assert status == 200
    assert quiet["Action"] == "HangUp"

    status, end = turn(client, "EndDialogue", conv)
    assert status == 200 and set(end) == {"RequestId"}
    status, gone = turn(client, "Dialogue", conv, Utterance="hello")
    assert status == 404 and gone["Code"] == "InvalidConversationId.NotFound"


def test_post_form_body_and_xml_format(client: Client) -> None:
    conv = conversation_id()
    r = client.call({**BEGIN, "ConversationId": conv, "Format": "XML"}, method="POST")
    assert r.status == 200
    assert r.headers["content-type"] == "text/xml;charset=utf-8"
    assert r.body.startswith(
        b"<?xml version='1.0' encoding='UTF-8'?><BeginDialogueResponse><RequestId>"
    )
    assert b"<Interruptible>true</Interruptible><Action>Broadcast</Action>" in r.body
    err = client.call(
        {
            "Action": "Dialogue",
            "InstanceId": "demo",
            "ConversationId": "nope",
            "Utterance": "x",
            "Format": "xml",
        }
    )
    assert err.status == 404
    assert (
        b"<Error><RequestId>" in err.body
        and b"<Code>InvalidConversationId.NotFound</Code>" in err.body
    )


def test_acs3_signed_requests_with_action_in_header(client: Client) -> None:
    conv = conversation_id()
    r = client.call_acs3(
        "BeginDialogue", {"InstanceId": "demo", "ConversationId": conv, "CallingNumber": "1"}
    )
    assert r.status == 200, r.body
    r = client.call_acs3(
        "Dialogue",
        {"InstanceId": "demo", "ConversationId": conv, "Utterance": "what are your opening hours"},
    )
    assert r.status == 200 and "9 am" in r.json["TextResponse"]


def test_debug_actions_behave_like_their_counterparts(client: Client) -> None:
    conv = conversation_id()
    r = client.call({**BEGIN, "Action": "DebugBeginDialogue", "ConversationId": conv})
    assert r.status == 200 and r.json["Action"] == "Broadcast"
    status, answer = turn(client, "DebugDialogue", conv, Utterance="投诉")
    assert status == 200 and answer["Action"] == "TransferToAgent"
    status, digits = turn(client, "DebugCollectedNumber", conv, Number="2")
    assert status == 200 and str(digits["TextResponse"]).startswith("银行卡业务")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        (
            {"Action": "BeginDialogue", "InstanceId": "demo", "CallingNumber": "1"},
            400,
            "MissingConversationId",
        ),
        ({**BEGIN, "ConversationId": "c", "CallingNumber": ""}, 400, "MissingCallingNumber"),
        (
            {**BEGIN, "ConversationId": "c", "InstanceId": "ghost"},
            404,
            "InvalidInstanceId.NotFound",
        ),
        ({**BEGIN, "ConversationId": "c", "InitialContext": "[1, 2]"}, 400, "InvalidParameter"),
        ({**BEGIN, "ConversationId": "c", "InitialContext": "{oops"}, 400, "InvalidParameter"),
        ({**BEGIN, "ConversationId": "c" * 129}, 400, "InvalidParameter"),
        ({**BEGIN, "ConversationId": "c", "Format": "YAML"}, 400, "InvalidParameter"),
        ({**BEGIN, "ConversationId": "c", "Action": "Teleport"}, 404, "InvalidAction.NotFound"),
        ({**BEGIN, "ConversationId": "c", "Version": "2014-05-26"}, 400, "InvalidVersion"),
        (
            {
                "Action": "CollectedNumber",
                "InstanceId": "demo",
                "ConversationId": "c",
                "Number": "12x",
            },
            400,
            "InvalidParameter",
        ),
        (
            {
                "Action": "Dialogue",
                "InstanceId": "demo",
                "ConversationId": "c",
                "Utterance": "u" * 1001,
            },
            400,
            "InvalidParameter",
        ),
        (
            {"Action": "Dialogue", "InstanceId": "demo", "ConversationId": "c", "Utterance": " "},
            400,
            "MissingUtterance",
        ),
        (
            {"Action": "SilenceTimeout", "InstanceId": "demo", "ConversationId": "never"},
            404,
            "InvalidConversationId.NotFound",
        ),
    ],
)
def test_bad_input_gets_documented_code_and_status(
    client: Client, params: dict[str, str], status: int, code: str
) -> None:
    r = client.call(params)
    assert r.status == status, r.body
    body = r.json
    assert body["Code"] == code
    assert body["RequestId"] and body["Message"]


def test_rejected_request_leaves_the_conversation_as_it_was(client: Client) -> None:
    conv = conversation_id()
    begin(client, conv)
    assert turn(client, "Dialogue", conv, Utterance="zzz")[0] == 200  # unrecognized 1
    # A second BeginDialogue for a live conversation is refused...
    r = client.call({**BEGIN, "ConversationId": conv})
    assert r.status == 400 and r.json["Code"] == "InvalidConversationId.Duplicated"
    # ...and so are malformed turns; none of them moves the unrecognized count.
    assert turn(client, "Dialogue", conv, Utterance="x", AdditionalContext="nope")[0] == 400
    assert turn(client, "CollectedNumber", conv, Number="abc!")[0] == 400
    _, second = turn(client, "Dialogue", conv, Utterance="zzz")
    assert second["Action"] == "Broadcast"  # count 2 of 3: still the plain prompt
    _, third = turn(client, "Dialogue", conv, Utterance="zzz")
    assert third["Action"] == "TransferToAgent"


def test_signature_errors(client: Client, gateway: GatewayProcess) -> None:
    params = {**BEGIN, "ConversationId": conversation_id()}
    p = client.signed_v1_params(params)
    p["Signature"] = "AAAA" + p["Signature"][4:]
    r = client.raw("GET", "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items()))
    assert r.status == 400 and r.json["Code"] == "SignatureDoesNotMatch"
    assert ":" in r.json["Message"]  # the SDKs split the message at ':'

    r = client.call(params, Timestamp=utc_now(-16 * 60))
    assert r.status == 400 and r.json["Code"] == "InvalidTimeStamp.Expired"
    r = client.call(params, Timestamp="22/11/2026")
    assert r.status == 400 and r.json["Code"] == "InvalidTimeStamp.Format"

    with Client(gateway.port, "nobody", "x") as stranger:
        r = stranger.call(params)
    assert r.status == 404 and r.json["Code"] == "InvalidAccessKeyId.NotFound"

    r = client.raw("GET", "/?Action=BeginDialogue&Version=2018-06-12&InstanceId=demo")
    assert r.status == 400 and r.json["Code"] == "IncompleteSignature"

    r = client.call_acs3(
        "Dialogue",
        {"InstanceId": "demo", "ConversationId": "c", "Utterance": "x"},
        **{"x-acs-date": utc_now(-3600)},
    )
    assert r.status == 400 and r.json["Code"] == "InvalidTimeStamp.Expired"


def test_retried_request_gets_the_first_reply_and_runs_once(client: Client) -> None:
    conv = conversation_id()
    begin(client, conv)
    p = client.signed_v1_params(
        {"Action": "SilenceTimeout", "InstanceId": "demo", "ConversationId": conv}
    )
    target = "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items())
    first = client.raw("GET", target)
    assert first.status == 200  # silence 1
    retry = client.raw("GET", target)
    assert retry.status == 200
    assert {k: v for k, v in retry.json.items() if k != "RequestId"} == {
        k: v for k, v in first.json.items() if k != "RequestId"
    }
    _, second = turn(client, "SilenceTimeout", conv)
    assert second["Action"] == "Broadcast"  # silence 2 of 3: the retry did not count
    _, third = turn(client, "SilenceTimeout", conv)
    assert third["Action"] == "HangUp"


def test_reused_nonce_on_another_request_is_refused_and_changes_nothing(client: Client) -> None:
    conv = conversation_id()
    begin(client, conv)
    p = client.signed_v1_params(
        {"Action": "SilenceTimeout", "InstanceId": "demo", "ConversationId": conv}
    )
    target = "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items())
    assert client.raw("GET", target).status == 200  # silence 1
    other = client.signed_v1_params(
        {"Action": "Dialogue", "InstanceId": "demo", "ConversationId": conv, "Utterance": "hi"},
        SignatureNonce=p["SignatureNonce"],
    )
    target = "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in other.items())
    reused = client.raw("GET", target)
    assert reused.status == 400 and reused.json["Code"] == "SignatureNonceUsed"
    _, second = turn(client, "SilenceTimeout", conv)
    assert second["Action"] == "Broadcast"  # silence 2 of 3: the refused request did not count
    r = client.call_acs3(
        "SilenceTimeout",
        {"InstanceId": "demo", "ConversationId": conv},
        **{"x-acs-signature-nonce": p["SignatureNonce"]},
    )
    # A nonce is single-use per access key, whichever signature kind carries it.
    assert r.status == 400 and r.json["Code"] == "SignatureNonceUsed"


def test_replay_of_a_refused_request_is_refused(client: Client) -> None:
    p = client.signed_v1_params(
        {"Action": "Dialogue", "InstanceId": "demo", "ConversationId": "nope", "Utterance": "x"}
    )
    target = "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items())
    assert client.raw("GET", target).json["Code"] == "InvalidConversationId.NotFound"
    # The first answer was an error: the retry gets the same error.
    assert client.raw("GET", target).json["Code"] == "InvalidConversationId.NotFound"


def test_read_only_key_cannot_run_dialogue_operations(gateway: GatewayProcess) -> None:
    with Client(gateway.port, RO_KEY_ID, RO_SECRET) as viewer:
        r = viewer.call({**BEGIN, "ConversationId": conversation_id()})
    assert r.status == 403 and r.json["Code"] == "Forbidden.RAM"


def test_oversized_body_and_bad_method(client: Client) -> None:
    r = client.raw(
        "POST", "/", b"a=" + b"x" * 70_000, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status == 400 and r.json["Code"] == "InvalidParameter"
    r = client.raw("DELETE", "/")
    assert r.status == 400 and r.json["Code"] == "UnsupportedHTTPMethod"
    r = client.raw("GET", "/?Action=%ff%fe")
    assert r.status == 400 and r.json["Code"] == "InvalidParameter"


def test_health_ready_and_metrics(client: Client, gateway: GatewayProcess) -> None:
    assert gateway.get("/healthz")[0] == 200
    assert gateway.get("/readyz")[0] == 200
    begin(client, conversation_id())
    status, headers, body = gateway.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in (
        'ivrgw_turn_duration_seconds_bucket{front="rpc",le="0.0001",operation="BeginDialogue",outcome="ok"}',
        'ivrgw_replies_total{action="Broadcast"}',
        'ivrgw_active_conversations{instance="demo"}',
        'ivrgw_errors_total{code="InvalidConversationId.NotFound"}',
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    assert gateway.get("/nowhere")[0] == 404


def test_logs_are_json_lines_without_secrets_or_signatures(
    client: Client, gateway: GatewayProcess
) -> None:
    p = client.signed_v1_params({**BEGIN, "ConversationId": conversation_id()})
    target = "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items())
    assert client.raw("GET", target).status == 200
    time.sleep(0.2)
    logs = gateway.logs()
    lines = [orjson.loads(line) for line in logs.splitlines() if line.strip()]
    assert any(
        line.get("msg") == "turn" and line.get("operation") == "BeginDialogue" for line in lines
    )
    assert "demo-secret" not in logs
    assert p["Signature"] not in logs


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    d: Path = tmp_path_factory.mktemp("small")
    config = write_config(
        d,
        auth=False,
        demo_overrides={r"^Concurrency = 100$": "Concurrency = 2"},
        extra="[sessions]\nidle_timeout_seconds = 1\nsweep_interval_seconds = 1\n",
    )
    gw = GatewayProcess(config, d / "gateway.log")
    yield gw
    gw.stop()


def test_concurrency_limit_and_idle_expiry(small_gateway: GatewayProcess) -> None:
    with Client(small_gateway.port) as c:

        def unsigned(params: dict[str, str]) -> tuple[int, dict[str, object]]:
            query = "&".join(
                f"{k}={quote(v, safe='')}" for k, v in {"Version": "2018-06-12", **params}.items()
            )
            r = c.raw("GET", "/?" + query)
            return r.status, r.json

        for conv in ("a", "b"):
            assert unsigned({**BEGIN, "ConversationId": conv})[0] == 200
        status, body = unsigned({**BEGIN, "ConversationId": "c"})
        assert status == 400 and body["Code"] == "InvalidConcurrency.LimitExceeded"
        # Idle conversations expire (timeout 1 s, sweep every 1 s) and free their slots.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, body = unsigned({**BEGIN, "ConversationId": "c"})
            if status == 200:
                break
            time.sleep(0.25)
        assert status == 200
        status, body = unsigned(
            {"Action": "Dialogue", "InstanceId": "demo", "ConversationId": "a", "Utterance": "hi"}
        )
        assert status == 404 and body["Code"] == "InvalidConversationId.NotFound"

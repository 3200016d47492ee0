"""Conversation records over the RPC API, against a real gateway and its SQLite file.

Records are written into the gateway's database from the test (the way its
writer thread writes them), or by the gateway itself for a whole
conversation over RPC; then read back through the signed API.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.store.db import connect
from gateway.store.records import ConversationBegun, ConversationEnded, RecordingSaved, Turn
from tests.conftest import RO_KEY_ID, RO_SECRET, Client, GatewayProcess, conversation_id


def database(gateway: GatewayProcess) -> Path:
    return gateway.log_path.parent / "var" / "gateway.db"


def record(gateway: GatewayProcess, *ops: Any) -> None:
    """Apply record operations to the gateway's database in one transaction."""
    db = connect(database(gateway))
    try:
        db.execute("BEGIN IMMEDIATE")
        for op in ops:
            op.apply(db)
        db.execute("COMMIT")
    finally:
        db.close()


def new_instance() -> str:
    """An instance id known only through its records (as a deleted instance is)."""
    return f"hist-{uuid.uuid4().hex[:12]}"


def ok(client: Client, action: str, **params: str) -> dict[str, Any]:
    r = client.call({"Action": action, **params})
    assert r.status == 200, r.body
    return r.json  # type: ignore[no-any-return]


def refused(client: Client, action: str, status: int, code: str, **params: str) -> str:
    r = client.call({"Action": action, **params})
    assert (r.status, r.json["Code"]) == (status, code), r.body
    return str(r.json["Message"])


def seed_calls(
    gateway: GatewayProcess, instance: str, n: int, start: int = 1_600_000_000_000
) -> None:
    """`n` ended conversations a minute apart, callers 1390000000k for k = i % 3."""
    ops: list[Any] = []
    for i in range(n):
        begin = start + i * 60_000
        ops.append(ConversationBegun(instance, f"c{i:03d}", begin, f"1390000000{i % 3}", "95555"))
        ops.append(
            ConversationEnded(
                instance, f"c{i:03d}", begin + 30_000, 4, 3, i % 2 == 0, "sg", "EndDialogue"
            )
        )
    record(gateway, *ops)


def test_query_conversations_pages_newest_first_with_seed_fields(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    seed_calls(gateway, inst, 25)
    body = ok(client, "QueryConversations", InstanceId=inst, PageNumber="1", PageSize="10")
    assert (body["PageNumber"], body["PageSize"], body["TotalCount"]) == (1, 10, 25)
    first = body["Conversations"][0]
    assert first == {
        "ConversationId": "c024",
        "CallingNumber": "13900000000",
        "BeginTime": 1_600_000_000_000 + 24 * 60_000,
        "EndTime": 1_600_000_000_000 + 24 * 60_000 + 30_000,
        "TransferredToAgent": True,
        "SkillGroupId": "sg",
        "UserUtteranceCount": 4,
        "EffectiveAnswerCount": 3,
    }
    last = ok(client, "QueryConversations", InstanceId=inst, PageNumber="3", PageSize="10")
    assert [c["ConversationId"] for c in last["Conversations"]] == [
        f"c{i:03d}" for i in range(4, -1, -1)
    ]
    assert (
        ok(client, "QueryConversations", InstanceId=inst, PageNumber="4", PageSize="10")[
            "Conversations"
        ]
        == []
    )


def test_query_conversations_filters_by_caller_and_inclusive_begin_range(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    seed_calls(gateway, inst, 30)
    t0 = 1_600_000_000_000
    body = ok(
        client,
        "QueryConversations",
        InstanceId=inst,
        PageNumber="1",
        PageSize="100",
        CallingNumber="13900000001",
        BeginTimeLeftRange=str(t0 + 60_000),
        BeginTimeRightRange=str(t0 + 10 * 60_000),
    )
    assert [c["ConversationId"] for c in body["Conversations"]] == ["c010", "c007", "c004", "c001"]
    assert body["TotalCount"] == 4


def test_list_and_describe_conversation_and_a_live_one(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(gateway, ConversationBegun(inst, "live", 1_700_000_000_000, "13700000000"))
    seed_calls(gateway, inst, 3)
    listed = ok(client, "ListConversations", InstanceId=inst, PageNumber="1", PageSize="2")
    assert listed["TotalCount"] == 4 and len(listed["Conversations"]) == 2
    assert listed["Conversations"][0]["ConversationId"] == "live"
    assert listed["Conversations"][0]["EndTime"] is None
    described = ok(client, "DescribeConversation", InstanceId=inst, ConversationId="c001")
    assert described["ConversationId"] == "c001" and described["TransferredToAgent"] is False
    assert described["BeginTime"] == 1_600_000_060_000 and described["EndTime"] == 1_600_000_090_000


def test_list_conversation_details_in_order_with_chinese_text(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(
        gateway,
        ConversationBegun(inst, "c", 1_000),
        Turn(inst, "c", 0, "Chatbot", "您好，欢迎致电", "Broadcast", 1_000),
        Turn(inst, "c", 1, "Chatbot", "转人工", "TransferToAgent", 2_200, '{"skillGroupId":"sg"}'),
        Turn(inst, "c", 1, "Customer", "人工服务", "Dialogue", 2_100),
    )
    body = ok(client, "ListConversationDetails", InstanceId=inst, ConversationId="c")
    assert body["ConversationDetails"] == [
        {
            "ConversationId": "c",
            "Speaker": "Chatbot",
            "Utterance": "您好，欢迎致电",
            "Action": "Broadcast",
            "ActionParams": "{}",
            "CreateTime": 1_000,
            "SequenceId": "0",
        },
        {
            "ConversationId": "c",
            "Speaker": "Customer",
            "Utterance": "人工服务",
            "Action": "Dialogue",
            "ActionParams": "{}",
            "CreateTime": 2_100,
            "SequenceId": "1",
        },
        {
            "ConversationId": "c",
            "Speaker": "Chatbot",
            "Utterance": "转人工",
            "Action": "TransferToAgent",
            "ActionParams": '{"skillGroupId":"sg"}',
            "CreateTime": 2_200,
            "SequenceId": "1",
        },
    ]
    xml = client.call(
        {
            "Action": "ListConversationDetails",
            "InstanceId": inst,
            "ConversationId": "c",
            "Format": "XML",
        }
    )
    assert xml.status == 200
    assert xml.body.count(b"<ConversationDetails>") == 3
    assert "<Utterance>人工服务</Utterance>".encode() in xml.body


def test_describe_recording_and_its_absence(client: Client, gateway: GatewayProcess) -> None:
    inst = new_instance()
    record(
        gateway,
        ConversationBegun(inst, "rec", 1_000),
        ConversationBegun(inst, "none", 1_000),
        RecordingSaved(inst, "rec", 2_000, "20190809132022.wav", "/var/recordings/demo/rec.wav"),
    )
    body = ok(client, "DescribeRecording", InstanceId=inst, ConversationId="rec")
    assert (body["FileName"], body["FilePath"]) == (
        "20190809132022.wav",
        "/var/recordings/demo/rec.wav",
    )
    refused(
        client,
        "DescribeRecording",
        404,
        "InvalidConversationId.NoRecording",
        InstanceId=inst,
        ConversationId="none",
    )


def test_a_recording_the_gateway_serves_gets_a_signed_link(
    client: Client, gateway: GatewayProcess
) -> None:
    # The recorder keeps a served file as "<link kind>/<name>"; "exports" is
    # a kind every gateway with a store serves.
    inst = new_instance()
    name = f"{inst}.wav"
    (gateway.log_path.parent / "var" / "exports" / name).write_bytes(b"RIFF0000WAVE")
    record(
        gateway,
        ConversationBegun(inst, "rec", 1_000),
        RecordingSaved(inst, "rec", 2_000, "call.wav", f"exports/{name}"),
    )
    body = ok(client, "DescribeRecording", InstanceId=inst, ConversationId="rec")
    assert body["FileName"] == "call.wav"
    url = urlsplit(body["FilePath"])
    assert url.netloc == f"127.0.0.1:{gateway.port}" and url.path == f"/files/exports/{name}"
    assert "Expires=" in url.query and "Signature=" in url.query
    status, headers, data = gateway.get(f"{url.path}?{url.query}")
    assert (status, headers["content-type"], data) == (200, "audio/wav", b"RIFF0000WAVE")
    status, _, _ = gateway.get(url.path)
    assert status == 403


@pytest.mark.parametrize(
    "action",
    ["DescribeConversation", "ListConversationDetails", "DescribeRecording"],
)
def test_unknown_ids_get_the_seed_not_found_codes(client: Client, action: str) -> None:
    refused(
        client,
        action,
        404,
        "InvalidConversationId.NotFound",
        InstanceId="demo",
        ConversationId="nope",
    )
    refused(
        client, action, 404, "InvalidInstanceId.NotFound", InstanceId="no-such", ConversationId="c"
    )


@pytest.mark.parametrize("action", ["QueryConversations", "ListConversations"])
def test_unknown_instance_and_a_served_instance_without_records(
    client: Client, action: str
) -> None:
    refused(
        client,
        action,
        404,
        "InvalidInstanceId.NotFound",
        InstanceId="no-such",
        PageNumber="1",
        PageSize="10",
    )
    # "demo" is served: known even before anything is recorded for it.
    assert ok(client, action, InstanceId="demo", PageNumber="1", PageSize="10")["PageSize"] == 10


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"PageSize": "0"}, "PageSize"),
        ({"PageSize": "10000"}, "PageSize"),
        ({"PageSize": "ten"}, "PageSize"),
        ({"PageNumber": "0"}, "PageNumber"),
        ({"BeginTimeLeftRange": "-1"}, "BeginTimeLeftRange"),
        ({"BeginTimeLeftRange": "1.5"}, "BeginTimeLeftRange"),
        ({"BeginTimeRightRange": "253402300800000"}, "BeginTimeRightRange"),
        ({"BeginTimeLeftRange": "2000", "BeginTimeRightRange": "1000"}, "BeginTimeRightRange"),
    ],
)
def test_bad_pages_and_time_ranges_name_the_parameter(
    client: Client, params: dict[str, str], name: str
) -> None:
    message = refused(
        client,
        "QueryConversations",
        400,
        "InvalidParameter",
        **{"InstanceId": "demo", "PageNumber": "1", "PageSize": "10", **params},
    )
    assert name in message


def test_missing_page_parameters(client: Client) -> None:
    refused(client, "ListConversations", 400, "MissingPageSize", InstanceId="demo", PageNumber="1")


def test_read_only_key_lists_and_describes_but_cannot_query(gateway: GatewayProcess) -> None:
    inst = new_instance()
    seed_calls(gateway, inst, 2)
    record(gateway, RecordingSaved(inst, "c000", 1, "a.wav", "/r/a.wav"))
    with Client(gateway.port, RO_KEY_ID, RO_SECRET) as ro:
        assert (
            ok(ro, "ListConversations", InstanceId=inst, PageNumber="1", PageSize="5")["TotalCount"]
            == 2
        )
        assert ok(ro, "DescribeConversation", InstanceId=inst, ConversationId="c000")
        assert ok(ro, "ListConversationDetails", InstanceId=inst, ConversationId="c000")
        assert (
            ok(ro, "DescribeRecording", InstanceId=inst, ConversationId="c000")["FileName"]
            == "a.wav"
        )
        refused(
            ro,
            "QueryConversations",
            403,
            "Forbidden.RAM",
            InstanceId=inst,
            PageNumber="1",
            PageSize="5",
        )


def wait_for(
    gateway: GatewayProcess, sql: str, params: tuple[object, ...], timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = connect(database(gateway), read_only=True)
        try:
            if db.execute(sql, params).fetchone() is not None:
                return
        except sqlite3.Error:
            pass
        finally:
            db.close()
        time.sleep(0.05)
    raise AssertionError(f"not recorded in time: {sql} {params}")


def test_a_whole_conversation_over_rpc_is_read_back(
    client: Client, gateway: GatewayProcess
) -> None:
    conv = conversation_id()
    base = {"InstanceId": "demo", "ConversationId": conv}
    ok(client, "BeginDialogue", **base, CallingNumber="13812345678", CalledNumber="95555")
    ok(client, "Dialogue", **base, Utterance="查询余额")
    ok(client, "SilenceTimeout", **base)
    ok(client, "CollectedNumber", **base, Number="0")
    ok(client, "EndDialogue", **base)
    wait_for(
        gateway,
        "SELECT 1 FROM conversations WHERE InstanceId = ? AND ConversationId = ? AND EndTime IS NOT NULL",
        ("demo", conv),
    )
    described = ok(client, "DescribeConversation", **base)
    assert described["CallingNumber"] == "13812345678"
    assert described["UserUtteranceCount"] == 2  # the utterance and the digits; not the silence
    assert described["EndTime"] >= described["BeginTime"]
    found = ok(
        client,
        "QueryConversations",
        InstanceId="demo",
        PageNumber="1",
        PageSize="10",
        CallingNumber="13812345678",
    )
    assert [c["ConversationId"] for c in found["Conversations"]] == [conv]
    lines = ok(client, "ListConversationDetails", **base)["ConversationDetails"]
    customer = [
        (d["SequenceId"], d["Action"], d["Utterance"]) for d in lines if d["Speaker"] == "Customer"
    ]
    assert customer == [
        ("1", "Dialogue", "查询余额"),
        ("2", "SilenceTimeout", ""),
        ("3", "CollectedNumber", "0"),
    ]
    assert lines[0]["Speaker"] == "Chatbot" and lines[0]["SequenceId"] == "0"
    assert len(lines) == 7

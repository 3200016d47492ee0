"""DescribeStatisticalData against a real gateway: each rate as docs/statistics.md
defines it, buckets, exclusions and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.statistics import percent
from gateway.store.records import ConversationBegun, ConversationEnded
from tests.api.test_conversations import new_instance, ok, record, refused
from tests.conftest import RO_KEY_ID, RO_SECRET, Client, GatewayProcess

HOUR = 3_600_000
# 2020-02-21 00:00:00 UTC
T0 = 1_582_243_200_000


def ended(
    inst: str,
    cid: str,
    begin: int,
    *,
    inputs: int = 0,
    effective: int = 0,
    unrecognized: int = 0,
    silences: int = 0,
    transferred: bool = False,
    last: str = "answer",
    debug: bool = False,
) -> list[Any]:
    return [
        ConversationBegun(inst, cid, begin, "13800000000", debug=debug),
        ConversationEnded(
            inst,
            cid,
            begin + 60_000,
            inputs,
            effective,
            transferred,
            "sg" if transferred else "",
            "EndDialogue",
            unrecognized,
            silences,
            last,
        ),
    ]


def stats(client: Client, inst: str, unit: str = "Hour", **params: str) -> dict[str, Any]:
    return ok(
        client,
        "DescribeStatisticalData",
        InstanceId=inst,
        TimeUnit=unit,
        **{"BeginTimeLeftRange": str(T0), "BeginTimeRightRange": str(T0 + HOUR - 1), **params},
    )


@pytest.fixture(scope="module")
def mixed(gateway: GatewayProcess) -> str:
    """One hour of conversations covering every case the rates tell apart."""
    inst = new_instance()
    record(
        gateway,
        # resolved: answered last, no agent
        *ended(inst, "a", T0 + 1, inputs=4, effective=3, unrecognized=1),
        # passed, not resolved: the answer sent the caller to an agent
        *ended(inst, "b", T0 + 2, inputs=2, effective=1, transferred=True),
        # the navigator gave up: not passed
        *ended(
            inst, "c", T0 + 3, inputs=3, unrecognized=2, transferred=True, last="unrecognized_final"
        ),
        # silent caller: no input, not passed
        *ended(inst, "d", T0 + 4, silences=2, last="silence_final"),
        # greeting, then the caller hung up: no input, not passed
        *ended(inst, "e", T0 + 5, last="greeting"),
        # left out: a debug conversation, and a live one
        *ended(inst, "f", T0 + 6, inputs=9, effective=9, debug=True),
        ConversationBegun(inst, "g", T0 + 7),
    )
    return inst


def test_conversation_counts_leave_out_debug_and_live_conversations(
    client: Client, mixed: str
) -> None:
    body = stats(client, mixed)
    assert body["ConversationTotalNum"] == 5
    assert body["StatisticalDataReports"][0]["TotalConversationNum"] == 5


def test_dialogue_pass_rate(client: Client, mixed: str) -> None:
    # passed: an input, and the last reply an answer (a, b) -> 2 of 5
    body = stats(client, mixed)
    assert body["TotalDialoguePassRate"] == "40.00%"
    assert body["StatisticalDataReports"][0]["DialoguePassRate"] == "40.00%"


def test_resolution_rate_and_resolved_questions(client: Client, mixed: str) -> None:
    # resolved: passed and not transferred to an agent (a) -> 1 of 5
    body = stats(client, mixed)
    assert (body["ResolvedQuestionTotalNum"], body["TotalResolutionRate"]) == (1, "20.00%")
    report = body["StatisticalDataReports"][0]
    assert (report["ResolvedQuestionNum"], report["ResolutionRate"]) == (1, "20.00%")


def test_valid_answer_rate(client: Client, mixed: str) -> None:
    # effective answers / caller inputs: (3 + 1 + 0) / (4 + 2 + 3) = 4 / 9
    body = stats(client, mixed)
    assert body["TotalValidAnswerRate"] == "44.44%"
    assert body["StatisticalDataReports"][0]["ValidAnswerRate"] == "44.44%"


def test_knowledge_hit_rate(client: Client, mixed: str) -> None:
    # effective / (effective + unrecognized): 4 / (4 + 1 + 2) = 4 / 7; b's input
    # that was neither (a repeat, a complaint) is in no part of it
    body = stats(client, mixed)
    assert body["TotalKnowledgeHitRate"] == "57.14%"
    assert body["StatisticalDataReports"][0]["KnowledgeHitRate"] == "57.14%"


def test_percent_rounds_half_up_to_two_decimals() -> None:
    assert [percent(n, d) for n, d in ((4, 5), (1, 3), (2, 3), (1, 8), (1, 1), (0, 7))] == [
        "80.00%",
        "33.33%",
        "66.67%",
        "12.50%",
        "100.00%",
        "0.00%",
    ]
    assert percent(1, 80_000) == "0.00%" and percent(1, 20_000) == "0.01%"  # 0.00125 / 0.005
    assert percent(0, 0) == "0.00%"


def test_every_bucket_is_reported_empty_ones_with_zeros(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(
        gateway,
        *ended(inst, "a", T0 + 10, inputs=1, effective=1),
        *ended(
            inst,
            "b",
            T0 + 2 * HOUR + 10,
            inputs=2,
            effective=1,
            unrecognized=1,
            last="unrecognized",
        ),
    )
    body = stats(client, inst, BeginTimeRightRange=str(T0 + 3 * HOUR - 1))
    reports = body["StatisticalDataReports"]
    assert [r["StatisticalDate"] for r in reports] == [
        "2020-02-21 00:00:00",
        "2020-02-21 01:00:00",
        "2020-02-21 02:00:00",
    ]
    assert [r["TotalConversationNum"] for r in reports] == [1, 0, 1]
    assert reports[1] == {
        "StatisticalDate": "2020-02-21 01:00:00",
        "TotalConversationNum": 0,
        "ResolvedQuestionNum": 0,
        "DialoguePassRate": "0.00%",
        "KnowledgeHitRate": "0.00%",
        "ResolutionRate": "0.00%",
        "ValidAnswerRate": "0.00%",
    }
    assert (reports[0]["ResolutionRate"], reports[2]["ResolutionRate"]) == ("100.00%", "0.00%")
    assert body["TotalValidAnswerRate"] == "66.67%"
    by_day = stats(client, inst, "Day", BeginTimeRightRange=str(T0 + 24 * HOUR))
    assert [
        (r["StatisticalDate"], r["TotalConversationNum"]) for r in by_day["StatisticalDataReports"]
    ] == [
        ("2020-02-21", 2),
        ("2020-02-22", 0),
    ]


def test_response_has_the_seed_fields(client: Client, mixed: str) -> None:
    body = stats(client, mixed)
    assert set(body) == {
        "RequestId",
        "ConversationTotalNum",
        "ResolvedQuestionTotalNum",
        "TotalDialoguePassRate",
        "TotalKnowledgeHitRate",
        "TotalResolutionRate",
        "TotalValidAnswerRate",
        "StatisticalDataReports",
    }
    xml = client.call(
        {
            "Action": "DescribeStatisticalData",
            "InstanceId": mixed,
            "TimeUnit": "Day",
            "BeginTimeLeftRange": str(T0),
            "BeginTimeRightRange": str(T0),
            "Format": "XML",
        }
    )
    assert b"<StatisticalDataReports><StatisticalDate>2020-02-21</StatisticalDate>" in xml.body


def test_default_range_is_the_last_day_by_hour_and_month_by_day(client: Client) -> None:
    assert (
        len(
            ok(client, "DescribeStatisticalData", InstanceId="demo", TimeUnit="Hour")[
                "StatisticalDataReports"
            ]
        )
        == 25
    )
    assert (
        len(
            ok(client, "DescribeStatisticalData", InstanceId="demo", TimeUnit="Day")[
                "StatisticalDataReports"
            ]
        )
        == 31
    )


@pytest.mark.parametrize(
    ("params", "code", "name"),
    [
        ({"TimeUnit": "Week"}, "InvalidParameter", "TimeUnit"),
        ({"TimeUnit": "day"}, "InvalidParameter", "TimeUnit"),
        ({"TimeUnit": ""}, "MissingTimeUnit", "TimeUnit"),
        (
            {"BeginTimeLeftRange": "2", "BeginTimeRightRange": "1"},
            "InvalidParameter",
            "BeginTimeRightRange",
        ),
        ({"BeginTimeLeftRange": "-5"}, "InvalidParameter", "BeginTimeLeftRange"),
        ({"BeginTimeRightRange": "99999999999999999"}, "InvalidParameter", "BeginTimeRightRange"),
        # at most 744 hours, 366 days
        (
            {"BeginTimeLeftRange": str(T0), "BeginTimeRightRange": str(T0 + 744 * HOUR)},
            "InvalidParameter",
            "BeginTimeLeftRange",
        ),
        (
            {"TimeUnit": "Day", "BeginTimeLeftRange": "0", "BeginTimeRightRange": str(T0)},
            "InvalidParameter",
            "BeginTimeLeftRange",
        ),
    ],
)
def test_bad_input_names_the_parameter(
    client: Client, params: dict[str, str], code: str, name: str
) -> None:
    message = refused(
        client,
        "DescribeStatisticalData",
        400,
        code,
        **{"InstanceId": "demo", "TimeUnit": "Hour", **params},
    )
    assert name in message


def test_longest_ranges_are_accepted(client: Client) -> None:
    hours = stats(client, "demo", BeginTimeRightRange=str(T0 + 744 * HOUR - 1))
    assert len(hours["StatisticalDataReports"]) == 744
    days = stats(client, "demo", "Day", BeginTimeRightRange=str(T0 + 366 * 24 * HOUR - 1))
    assert len(days["StatisticalDataReports"]) == 366


def test_unknown_instance_and_read_only_key(
    client: Client, gateway: GatewayProcess, mixed: str
) -> None:
    refused(
        client,
        "DescribeStatisticalData",
        404,
        "InvalidInstanceId.NotFound",
        InstanceId="nope",
        TimeUnit="Day",
    )
    with Client(gateway.port, RO_KEY_ID, RO_SECRET) as ro:
        assert stats(ro, mixed)["ConversationTotalNum"] == 5

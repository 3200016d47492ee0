"""Exports: started over the API of a real gateway, followed with
DescribeExportProgress, downloaded over HTTP through the signed link; the
export thread's memory on a large export; tasks a dead process left behind."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.api.exports import details_job
from gateway.store import exports
from gateway.store.db import connect, open_database
from gateway.store.exports import Exporter, TaskStarted
from gateway.store.queries import ConversationFilter
from gateway.store.records import ConversationBegun, ConversationEnded, Turn
from gateway.store.writer import Writer
from tests.api.test_conversations import new_instance, ok, record, refused
from tests.conftest import RO_KEY_ID, RO_SECRET, Client, GatewayProcess, write_config

BOM = b"\xef\xbb\xbf"
T0 = 1_582_243_200_000  # 2020-02-21 00:00:00 UTC
HOUR = 3_600_000


def finished(client: Client, inst: str, task: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = ok(client, "DescribeExportProgress", InstanceId=inst, ExportTaskId=task)
        if body["Status"] != "RUNNING":
            return body
        time.sleep(0.05)
    raise AssertionError("export still running")


def download(gateway: GatewayProcess, url: str) -> tuple[dict[str, str], bytes]:
    parts = urlsplit(url)
    assert parts.netloc == f"127.0.0.1:{gateway.port}"
    status, headers, data = gateway.get(f"{parts.path}?{parts.query}")
    assert status == 200, data
    return headers, data


def rows_of(data: bytes) -> list[list[str]]:
    assert data.startswith(BOM)
    return list(csv.reader(io.StringIO(data[len(BOM) :].decode("utf-8"), newline="")))


def conversation(inst: str, cid: str, begin: int, caller: str, words: str) -> list[Any]:
    return [
        ConversationBegun(inst, cid, begin, caller, "95555"),
        Turn(inst, cid, 0, "Chatbot", "您好，欢迎致电", "Broadcast", begin),
        Turn(inst, cid, 1, "Customer", words, "Dialogue", begin + 1_500),
        Turn(inst, cid, 1, "Chatbot", "好的，再见", "HangUp", begin + 1_600, '{"a":1}'),
        ConversationEnded(inst, cid, begin + 2_000, 1, 1, False, "", "EndDialogue", 0, 0, "answer"),
    ]


def test_conversation_details_export_downloads_as_utf8_csv_with_bom(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(
        gateway,
        *conversation(inst, "c1", T0 + 1_234, "13800000001", "我要查话费"),
        *conversation(inst, "c2", T0 + 60_000, "13800000002", "=HYPERLINK(1)"),
    )
    started = ok(client, "ExportConversationDetails", InstanceId=inst)
    task = started["ExportTaskId"]
    body = finished(client, inst, task)
    assert body["Status"] == "FINISHED"
    headers, data = download(gateway, body["FileHttpUrl"])
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert f"ConversationDetails-{task}.csv" in headers["content-disposition"]
    rows = rows_of(data)
    assert rows[0] == [
        "ConversationId",
        "CallingNumber",
        "CalledNumber",
        "BeginTime",
        "EndTime",
        "SequenceId",
        "Speaker",
        "Utterance",
        "Action",
        "ActionParams",
        "CreateTime",
    ]
    c1 = ["c1", "13800000001", "95555", "2020-02-21 00:00:01.234", "2020-02-21 00:00:03.234"]
    assert rows[1:4] == [
        [*c1, "0", "Chatbot", "您好，欢迎致电", "Broadcast", "{}", "2020-02-21 00:00:01.234"],
        [*c1, "1", "Customer", "我要查话费", "Dialogue", "{}", "2020-02-21 00:00:02.734"],
        [*c1, "1", "Chatbot", "好的，再见", "HangUp", '{"a":1}', "2020-02-21 00:00:02.834"],
    ]
    assert len(rows) == 7
    # A spreadsheet formula from a caller is quoted, never run.
    assert rows[5][7] == "'=HYPERLINK(1)"
    assert "\r\n" in data.decode("utf-8")


def test_conversation_details_export_applies_the_filters(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(
        gateway,
        *conversation(inst, "a", T0, "111", "一"),
        *conversation(inst, "b", T0 + HOUR, "222", "二"),
        *conversation(inst, "c", T0 + 2 * HOUR, "111", "三"),
    )
    task = ok(
        client,
        "ExportConversationDetails",
        InstanceId=inst,
        CallingNumber="111",
        BeginTimeLeftRange=str(T0 + 1),
    )["ExportTaskId"]
    _, data = download(gateway, finished(client, inst, task)["FileHttpUrl"])
    assert {row[0] for row in rows_of(data)[1:]} == {"c"}


def test_statistical_data_export_has_the_reports_and_a_total(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(
        gateway,
        *conversation(inst, "a", T0 + 5, "1", "x"),
        *conversation(inst, "b", T0 + HOUR + 5, "1", "y"),
    )
    task = ok(
        client,
        "ExportStatisticalData",
        InstanceId=inst,
        ExportType="statistical",
        TimeUnit="Hour",
        BeginTimeLeftRange=str(T0),
        BeginTimeRightRange=str(T0 + 2 * HOUR - 1),
    )["ExportTaskId"]
    _, data = download(gateway, finished(client, inst, task)["FileHttpUrl"])
    assert rows_of(data) == [
        [
            "StatisticalDate",
            "TotalConversationNum",
            "ResolvedQuestionNum",
            "DialoguePassRate",
            "KnowledgeHitRate",
            "ResolutionRate",
            "ValidAnswerRate",
        ],
        ["2020-02-21 00:00:00", "1", "1", "100.00%", "100.00%", "100.00%", "100.00%"],
        ["2020-02-21 01:00:00", "1", "1", "100.00%", "100.00%", "100.00%", "100.00%"],
        ["Total", "2", "2", "100.00%", "100.00%", "100.00%", "100.00%"],
    ]


def test_export_links_expire_and_are_signed(client: Client, gateway: GatewayProcess) -> None:
    inst = new_instance()
    record(gateway, *conversation(inst, "a", T0, "1", "x"))
    task = ok(client, "ExportConversationDetails", InstanceId=inst)["ExportTaskId"]
    url = urlsplit(finished(client, inst, task)["FileHttpUrl"])
    expires = int(dict(p.split("=", 1) for p in url.query.split("&"))["Expires"])
    assert 3_500 < expires - time.time() <= 3_600  # [store] link_ttl_seconds, 1 hour
    tampered = url.query.replace(f"Expires={expires}", f"Expires={expires + 60}")
    assert gateway.get(f"{url.path}?{tampered}")[0] == 403
    assert gateway.get(url.path)[0] == 403


@pytest.mark.parametrize(
    ("action", "params", "status", "code", "name"),
    [
        ("ExportStatisticalData", {"ExportType": "pdf"}, 400, "InvalidParameter", "ExportType"),
        ("ExportStatisticalData", {"ExportType": ""}, 400, "MissingExportType", "ExportType"),
        ("ExportStatisticalData", {"TimeUnit": "Minute"}, 400, "InvalidParameter", "TimeUnit"),
        (
            "ExportStatisticalData",
            {"BeginTimeLeftRange": "9", "BeginTimeRightRange": "8"},
            400,
            "InvalidParameter",
            "BeginTimeRightRange",
        ),
        (
            "ExportConversationDetails",
            {"BeginTimeLeftRange": "x"},
            400,
            "InvalidParameter",
            "BeginTimeLeftRange",
        ),
        (
            "ExportConversationDetails",
            {"BeginTimeLeftRange": "9", "BeginTimeRightRange": "8"},
            400,
            "InvalidParameter",
            "BeginTimeRightRange",
        ),
        (
            "ExportConversationDetails",
            {"InstanceId": "nope"},
            404,
            "InvalidInstanceId.NotFound",
            "",
        ),
        ("ExportStatisticalData", {"InstanceId": "nope"}, 404, "InvalidInstanceId.NotFound", ""),
        (
            "DescribeExportProgress",
            {"ExportTaskId": "no-such-task"},
            404,
            "InvalidExportTaskId.NotFound",
            "",
        ),
        (
            "DescribeExportProgress",
            {"InstanceId": "nope", "ExportTaskId": "t"},
            404,
            "InvalidInstanceId.NotFound",
            "",
        ),
    ],
)
def test_bad_input(
    client: Client, action: str, params: dict[str, str], status: int, code: str, name: str
) -> None:
    base = {"InstanceId": "demo", "ExportType": "statistical", "TimeUnit": "Day"}
    message = refused(client, action, status, code, **{**base, **params})
    assert name in message


def test_a_task_is_found_only_under_its_instance(client: Client, gateway: GatewayProcess) -> None:
    inst = new_instance()
    record(gateway, *conversation(inst, "a", T0, "1", "x"))
    task = ok(client, "ExportConversationDetails", InstanceId=inst)["ExportTaskId"]
    refused(
        client,
        "DescribeExportProgress",
        404,
        "InvalidExportTaskId.NotFound",
        InstanceId="demo",
        ExportTaskId=task,
    )


def test_read_only_key_follows_progress_but_cannot_export(
    client: Client, gateway: GatewayProcess
) -> None:
    inst = new_instance()
    record(gateway, *conversation(inst, "a", T0, "1", "x"))
    task = ok(client, "ExportConversationDetails", InstanceId=inst)["ExportTaskId"]
    with Client(gateway.port, RO_KEY_ID, RO_SECRET) as ro:
        assert finished(ro, inst, task)["Status"] == "FINISHED"
        refused(ro, "ExportConversationDetails", 403, "Forbidden.RAM", InstanceId=inst)
        refused(
            ro,
            "ExportStatisticalData",
            403,
            "Forbidden.RAM",
            InstanceId=inst,
            ExportType="statistical",
            TimeUnit="Day",
        )


def test_tasks_left_running_by_a_dead_process_are_failed_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = GatewayProcess(config, tmp_path / "first.log")
    first.stop()
    db = connect(tmp_path / "var" / "gateway.db")
    TaskStarted("t-dead", "demo", "ConversationDetails", "{}", 1).apply(db)
    db.close()
    part = tmp_path / "var" / "exports" / "ConversationDetails-t-dead.csv.part"
    part.write_bytes(b"half a file")
    second = GatewayProcess(config, tmp_path / "second.log")
    try:
        with Client(second.port) as c:
            body = finished(c, "demo", "t-dead", timeout=5)
        assert body == {"RequestId": body["RequestId"], "Status": "FAILED", "FileHttpUrl": ""}
        assert not part.exists()
    finally:
        second.stop()


# -- in process: the export thread itself ------------------------------------


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gateway.db"
    open_database(path).close()
    yield path


def fill(path: Path, conversations: int) -> None:
    """`conversations` conversations of 10 lines each, Chinese text included."""
    db = open_database(path)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO conversations (InstanceId, ConversationId, CallingNumber, BeginTime, EndTime)"
        " VALUES ('i', ?, ?, ?, ?)",
        (
            (f"c{k:07d}", f"138{k % 9973:08d}", T0 + k * 1000, T0 + k * 1000 + 900)
            for k in range(conversations)
        ),
    )
    db.executemany(
        "INSERT INTO conversation_details (InstanceId, ConversationId, SequenceId, Speaker,"
        " Utterance, Action, CreateTime) VALUES ('i', ?, ?, ?, ?, 'Dialogue', ?)",
        (
            (
                f"c{k:07d}",
                seq,
                speaker,
                f"第{seq}轮 我想查询一下本月的话费余额 {k}",
                T0 + k * 1000 + seq,
            )
            for k in range(conversations)
            for seq in range(5)
            for speaker in ("Customer", "Chatbot")
        ),
    )
    db.execute("COMMIT")
    db.close()


def export_peak(path: Path, directory: Path) -> tuple[int, int]:
    """(lines written, peak traced bytes) for one ConversationDetails export."""
    writer = Writer(path)
    writer.start()
    try:
        exporter = Exporter(path, directory, writer)
        writer.call_future(TaskStarted("t", "i", "ConversationDetails", "{}", 1)).result()
        tracemalloc.start()
        try:
            exporter.start("t", "out.csv", details_job(ConversationFilter("i"))).join(120)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        writer.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT Status FROM export_tasks").fetchone() == ("FINISHED",)
    db.close()
    with (directory / "out.csv").open(encoding="utf-8-sig") as f:
        lines = sum(1 for _ in f) - 1
    return lines, peak


def test_export_memory_stays_flat_as_rows_grow(tmp_path: Path) -> None:
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    fill(small, 2_000)
    fill(large, 40_000)
    small_lines, small_peak = export_peak(small, tmp_path / "small")
    large_lines, large_peak = export_peak(large, tmp_path / "large")
    assert (small_lines, large_lines) == (20_000, 400_000)
    # Twenty times the rows, about the same memory: nothing grows with the rows.
    print(f"export peak: {small_peak} B for {small_lines} lines, {large_peak} B for {large_lines}")
    assert large_peak < 2 * small_peak + 512 * 1024, (small_peak, large_peak)
    assert large_peak < 8 * 1024 * 1024


def test_a_failing_export_is_marked_failed_and_leaves_no_file(
    tmp_path: Path, store_path: Path
) -> None:
    writer = Writer(store_path)
    writer.start()
    try:
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("a file where the exports directory should be")
        exporter = Exporter(store_path, blocked, writer)
        writer.call_future(TaskStarted("t", "i", "ConversationDetails", "{}", 1)).result()
        exporter.start("t", "out.csv", details_job(ConversationFilter("i"))).join(30)
        writer.flush_sync(10)
    finally:
        writer.close()
    db = sqlite3.connect(store_path)
    status, error = db.execute("SELECT Status, Error FROM export_tasks").fetchone()
    db.close()
    assert status == "FAILED" and "FileExistsError" in error


def test_a_job_that_raises_midway_removes_its_partial_file(
    tmp_path: Path, store_path: Path
) -> None:
    def job(db: sqlite3.Connection) -> exports.Rows:
        def rows() -> Iterator[list[object]]:
            yield ["one"]
            raise RuntimeError("disk on fire")

        return ["A"], rows()

    writer = Writer(store_path)
    writer.start()
    try:
        exporter = Exporter(store_path, tmp_path, writer)
        writer.call_future(TaskStarted("t", "i", "StatisticalData", "{}", 1)).result()
        exporter.start("t", "out.csv", job).join(30)
    finally:
        writer.close()
    assert list(tmp_path.glob("out.csv*")) == []
    db = sqlite3.connect(store_path)
    assert db.execute("SELECT Status, Error FROM export_tasks").fetchone() == (
        "FAILED",
        "RuntimeError: disk on fire",
    )
    db.close()

"""ExportConversationDetails, ExportStatisticalData and DescribeExportProgress
(seed §12.3, §12.5, §12.6): CSV files written in the background and fetched
through an expiring signed link (docs/conversations.md lists the columns).

An export's row is committed (RUNNING) before its ExportTaskId is answered,
so DescribeExportProgress finds it at once; the thread then streams the
file (gateway.store.exports). At start-up, tasks a previous process left
RUNNING are marked FAILED and their partial files removed.
"""

from __future__ import annotations

import functools
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, MAX_NUMBER_CHARS, Params, optional, required
from gateway.api.conversations import LEFT, RIGHT, begin_range, known_instance
from gateway.api.manage import Context, Fields, Handler, Request
from gateway.api.statistics import TimeUnit, report, stat_range, time_unit, totals
from gateway.store import exports, queries
from gateway.store.exports import Exporter, Job, Kind, Rows
from gateway.store.queries import ConversationFilter

EXPORT_TYPES = ("statistical",)
STATISTICS_COLUMNS = (
    "StatisticalDate",
    "TotalConversationNum",
    "ResolvedQuestionNum",
    "DialoguePassRate",
    "KnowledgeHitRate",
    "ResolutionRate",
    "ValidAnswerRate",
)
# A spreadsheet runs a cell that starts with one of these as a formula; an
# utterance is the caller's (or a recogniser's) text, so it is quoted.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@functools.lru_cache(maxsize=256)
def csv_time(ms: int | None) -> str:
    """`2020-02-21 19:00:00.123` in UTC; "" for None (a live conversation's EndTime)."""
    if ms is None:
        return ""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ms // 1000))}.{ms % 1000:03d}"


def csv_text(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA) else text


def _detail_rows(lines: Iterator[tuple[Any, ...]]) -> Iterator[Sequence[object]]:
    for cid, calling, called, begin, end, seq, speaker, utterance, action, ap, created in lines:
        yield (
            cid,
            calling,
            called,
            csv_time(begin),
            csv_time(end),
            seq,
            speaker,
            csv_text(str(utterance)),
            action,
            ap,
            csv_time(created),
        )


def details_job(f: ConversationFilter) -> Job:
    """ExportConversationDetails: one line per line of dialogue."""

    def job(db: sqlite3.Connection) -> Rows:
        return queries.DETAIL_EXPORT_COLUMNS, _detail_rows(queries.detail_lines(db, f))

    return job


def statistics_job(instance_id: str, left: int, right: int, unit: TimeUnit) -> Job:
    """ExportStatisticalData: DescribeStatisticalData's reports, then a Total line."""

    def job(db: sqlite3.Connection) -> Rows:
        reports, total = report(db, instance_id, left, right, unit)
        t = totals(total)
        rows = [[r[c] for c in STATISTICS_COLUMNS] for r in reports]
        rows.append(
            [
                "Total",
                t["ConversationTotalNum"],
                t["ResolvedQuestionTotalNum"],
                *(t[f"Total{c}"] for c in STATISTICS_COLUMNS[3:]),
            ]
        )
        return STATISTICS_COLUMNS, rows

    return job


def actions(context: Context) -> dict[str, Handler]:
    store = context.store
    exporter: Exporter | None = None
    if store is not None:
        exporter = Exporter(store.path, store.exports_dir, store.writer, now_ms=store.now_ms)
        # Before any export of this process is queued, so only a dead
        # process's tasks are abandoned (the writer applies in order).
        store.writer.submit(exports.AbandonRunning(store.now_ms()))
        exports.remove_partial(store.exports_dir)

    async def _start(instance_id: str, kind: Kind, parameters: Fields, job: Job) -> Fields:
        store = context.need_store()
        assert exporter is not None
        task_id = str(uuid.uuid4())
        started = exports.TaskStarted(
            task_id, instance_id, kind, orjson.dumps(parameters).decode(), store.now_ms()
        )
        await store.writer.call(started)
        exporter.start(task_id, f"{kind}-{task_id}.csv", job)
        return {"ExportTaskId": task_id}

    async def export_conversation_details(params: Params, request: Request) -> Fields:
        calling = optional(params, "CallingNumber", MAX_NUMBER_CHARS).strip()
        left, right = begin_range(params)
        instance_id, _ = await known_instance(context, params)
        f = ConversationFilter(instance_id, calling, left, right)
        parameters = {"CallingNumber": calling, LEFT: left, RIGHT: right}
        return await _start(instance_id, "ConversationDetails", parameters, details_job(f))

    async def export_statistical_data(params: Params, request: Request) -> Fields:
        export_type = required(params, "ExportType", 32)
        if export_type not in EXPORT_TYPES:
            raise errors.InvalidParameter.named("ExportType", "must be statistical")
        unit = time_unit(params)
        left, right = stat_range(params, unit, context.need_store().now_ms())
        instance_id, _ = await known_instance(context, params)
        parameters = {"ExportType": export_type, "TimeUnit": unit, LEFT: left, RIGHT: right}
        job = statistics_job(instance_id, left, right, unit)
        return await _start(instance_id, "StatisticalData", parameters, job)

    async def describe_export_progress(params: Params, request: Request) -> Fields:
        task_id = required(params, "ExportTaskId", MAX_ID_CHARS)
        instance_id, store = await known_instance(context, params)
        task = await store.readers.run(exports.task, instance_id, task_id)
        if task is None:
            raise errors.ExportTaskNotFound()
        url = ""
        if task.status == exports.FINISHED:
            url = context.links.url(request.base_url, "exports", Path(task.file_path).name)
        return {"Status": task.status, "FileHttpUrl": url}

    return {
        "ExportConversationDetails": export_conversation_details,
        "ExportStatisticalData": export_statistical_data,
        "DescribeExportProgress": describe_export_progress,
    }

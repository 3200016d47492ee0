"""DescribeStatisticalData (seed §12.4): an instance's conversations counted per
day or hour, with the four rates docs/statistics.md defines.

The counting is `gateway.store.queries.tallies` (which conversations count,
which pass, which are resolved); the rates are `rates` below. Both follow
docs/statistics.md word for word: change them together with it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final, Literal

from gateway import errors
from gateway.api.actions import Params, required
from gateway.api.conversations import LEFT, RIGHT, begin_range, known_instance
from gateway.api.manage import Context, Fields, Handler, Request
from gateway.store import queries
from gateway.store.queries import Tally

TimeUnit = Literal["Day", "Hour"]
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
UNIT_MS: Final[dict[str, int]] = {"Day": DAY_MS, "Hour": HOUR_MS}
# The most buckets one answer holds, and the range used when none is given.
MAX_BUCKETS: Final[dict[str, int]] = {"Day": 366, "Hour": 31 * 24}
DEFAULT_SPAN_MS: Final[dict[str, int]] = {"Day": 30 * DAY_MS, "Hour": DAY_MS}


def time_unit(params: Params) -> TimeUnit:
    value = required(params, "TimeUnit", 8)
    if value == "Day":
        return "Day"
    if value == "Hour":
        return "Hour"
    raise errors.InvalidParameter.named("TimeUnit", "must be Day or Hour")


def stat_range(params: Params, unit: TimeUnit, now_ms: int) -> tuple[int, int]:
    """The BeginTime range counted: the parameters', the right end defaulting
    to now and the left to a default span before it; at most `MAX_BUCKETS`
    buckets of `unit`."""
    left, right = begin_range(params)
    if right is None:
        right = max(now_ms, left or 0)
    if left is None:
        left = max(0, right - DEFAULT_SPAN_MS[unit])
    unit_ms = UNIT_MS[unit]
    if right // unit_ms - left // unit_ms + 1 > MAX_BUCKETS[unit]:
        raise errors.InvalidParameter.named(
            LEFT, f"the range to {RIGHT} spans more than {MAX_BUCKETS[unit]} of TimeUnit {unit}"
        )
    return left, right


# -- the rates (docs/statistics.md) -------------------------------------------


def percent(numerator: int, denominator: int) -> str:
    """`numerator / denominator` as a percentage with two decimals, rounded half
    up ("80.00%"); "0.00%" when the denominator is 0."""
    if denominator <= 0:
        return "0.00%"
    hundredths = (numerator * 20_000 + denominator) // (2 * denominator)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def rates(t: Tally) -> dict[str, str]:
    return {
        "DialoguePassRate": percent(t.passed, t.conversations),
        "KnowledgeHitRate": percent(t.effective, t.effective + t.unrecognized),
        "ResolutionRate": percent(t.resolved, t.conversations),
        "ValidAnswerRate": percent(t.effective, t.inputs),
    }


def statistical_date(bucket: int, unit: TimeUnit) -> str:
    """A bucket's label, in UTC: `2020-02-21` (Day) or `2020-02-21 19:00:00` (Hour)."""
    start = time.gmtime(bucket * UNIT_MS[unit] // 1000)
    return time.strftime("%Y-%m-%d" if unit == "Day" else "%Y-%m-%d %H:00:00", start)


def report(
    db: sqlite3.Connection, instance_id: str, left: int, right: int, unit: TimeUnit
) -> tuple[list[dict[str, Any]], Tally]:
    """Every bucket from `left` to `right` (empty ones too, with zeros), oldest
    first, and the total over the range. Runs on a read-only connection."""
    unit_ms = UNIT_MS[unit]
    found = queries.tallies(db, instance_id, left, right, unit_ms)
    reports = []
    for bucket in range(left // unit_ms, right // unit_ms + 1):
        t = found.get(bucket, Tally())
        reports.append(
            {
                "StatisticalDate": statistical_date(bucket, unit),
                "TotalConversationNum": t.conversations,
                "ResolvedQuestionNum": t.resolved,
                **rates(t),
            }
        )
    return reports, queries.total(found.values())


def totals(t: Tally) -> dict[str, Any]:
    """The answer's fields about the whole range."""
    r = rates(t)
    return {
        "ConversationTotalNum": t.conversations,
        "ResolvedQuestionTotalNum": t.resolved,
        **{f"Total{name}": value for name, value in r.items()},
    }


def actions(context: Context) -> dict[str, Handler]:
    async def describe_statistical_data(params: Params, request: Request) -> Fields:
        unit = time_unit(params)
        store = context.need_store()
        left, right = stat_range(params, unit, store.now_ms())
        instance_id, _ = await known_instance(context, params)
        reports, total = await store.readers.run(report, instance_id, left, right, unit)
        return {**totals(total), "StatisticalDataReports": reports}

    return {"DescribeStatisticalData": describe_statistical_data}

"""Prometheus metrics. The names are a public interface (docs/metrics.md).

The turn-path metrics are plain numbers in one custom collector, not
prometheus_client's Histogram and Counter: every update and every scrape
runs on the event loop thread, so the library's per-update locks buy
nothing, and its observe() walks the buckets in Python. Here an observation
is one `bisect` and two additions (callgrind: about 18k instructions per
turn for the library's two updates, under 3k for these). Gauges that can be
derived (live conversations per instance) are read at scrape time from
their source instead of being kept up to date on every turn.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.dialogue.operations import Action

OPERATIONS = ("BeginDialogue", "Dialogue", "CollectedNumber", "SilenceTimeout", "EndDialogue")
OUTCOMES = ("ok", "error", "fallback")
# Fine enough at the bottom to see 100 µs turns, wide enough for slow bots.
TURN_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Series:
    """One label set of a histogram: per-bucket counts (the last is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. the `le` bucket it falls in.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class TurnKey(NamedTuple):
    operation: str
    front: str
    outcome: str


class Metrics(Collector):
    def __init__(self, live_conversations: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(self)
        self._live = live_conversations
        self._turns: dict[TurnKey, Series] = {}
        self._replies = dict.fromkeys(Action, 0)
        self._errors: dict[str, int] = {}

    def bind_front(self, front: str) -> None:
        """Create a front door's histogram series up front, so they show as zero."""
        for op in OPERATIONS:
            for outcome in OUTCOMES:
                self._series(TurnKey(op, front, outcome))

    def series(self, operation: str, front: str, outcome: str) -> Series:
        """The histogram series for one label set, for callers that bind it once."""
        return self._series(TurnKey(operation, front, outcome))

    def _series(self, key: TurnKey) -> Series:
        series = self._turns.get(key)
        if series is None:
            series = self._turns[key] = Series(TURN_BUCKETS)
        return series

    def observe_turn(self, operation: str, front: str, outcome: str, seconds: float) -> None:
        # A plain tuple finds the TurnKey entry (equal hash and value) without
        # building a NamedTuple per turn.
        series = self._turns.get((operation, front, outcome))  # type: ignore[call-overload]
        if series is None:
            series = self._series(TurnKey(operation, front, outcome))
        series.observe(seconds)

    def count_reply(self, action: Action) -> None:
        self._replies[action] += 1

    def count_error(self, code: str) -> None:
        self._errors[code] = self._errors.get(code, 0) + 1

    def collect(self) -> Iterator[Metric]:
        turns = HistogramMetricFamily(
            "ivrgw_turn_duration_seconds",
            "Time to run one dialogue operation, from request read to reply built.",
            labels=TurnKey._fields,
        )
        for key, series in self._turns.items():
            turns.add_metric(list(key), series.cumulative(), series.total)
        yield turns

        replies = CounterMetricFamily(
            "ivrgw_replies", "Replies sent, by action.", labels=("action",)
        )
        for action, n in self._replies.items():
            replies.add_metric([action.value], n)
        yield replies

        active = GaugeMetricFamily(
            "ivrgw_active_conversations", "Live conversations, by instance.", labels=("instance",)
        )
        for instance, n in self._live():
            active.add_metric([instance], n)
        yield active

        failures = CounterMetricFamily(
            "ivrgw_errors", "Errors answered to clients, by error code.", labels=("code",)
        )
        for code, n in self._errors.items():
            failures.add_metric([code], n)
        yield failures

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def __repr__(self) -> str:
        return f"Metrics(series={len(self._turns)}, errors={sum(self._errors.values())})"

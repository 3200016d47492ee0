"""Prometheus metrics. The names are a public interface (docs/metrics.md).

Label children used on the turn path are bound once, at start-up, so a turn
pays one dict lookup and one observe, not a `labels()` call.
Each `Metrics` has its own registry, so tests can run several gateways in one
process; the process collectors are registered on it too.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.dialogue.operations import Action

OPERATIONS = ("BeginDialogue", "Dialogue", "CollectedNumber", "SilenceTimeout", "EndDialogue")
OUTCOMES = ("ok", "error", "fallback")
# Fine enough at the bottom to see 100 µs turns, wide enough for slow bots.
TURN_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.turn_duration = Histogram(
            "ivrgw_turn_duration_seconds",
            "Time to run one dialogue operation, from request parsed to reply built.",
            ("operation", "front", "outcome"),
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.replies = Counter(
            "ivrgw_replies_total",
            "Replies sent, by action.",
            ("action",),
            registry=self.registry,
        )
        self.active = Gauge(
            "ivrgw_active_conversations",
            "Live conversations, by instance.",
            ("instance",),
            registry=self.registry,
        )
        self.errors = Counter(
            "ivrgw_errors_total",
            "Errors answered to clients, by VoiceNavigator error code.",
            ("code",),
            registry=self.registry,
        )
        self._reply_children = {a: self.replies.labels(a.value) for a in Action}
        self._turn_children: dict[tuple[str, str, str], Histogram] = {}

    def bind_front(self, front: str) -> None:
        """Pre-create the turn histogram children of one front door."""
        for op in OPERATIONS:
            for outcome in OUTCOMES:
                self._turn_children[(op, front, outcome)] = self.turn_duration.labels(
                    op, front, outcome
                )

    def observe_turn(self, operation: str, front: str, outcome: str, seconds: float) -> None:
        child = self._turn_children.get((operation, front, outcome))
        if child is None:
            child = self.turn_duration.labels(operation, front, outcome)
            self._turn_children[(operation, front, outcome)] = child
        child.observe(seconds)

    def count_reply(self, action: Action) -> None:
        self._reply_children[action].inc()

    def count_error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def set_active(self, instance_id: str, count: int) -> None:
        self.active.labels(instance_id).set(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def __repr__(self) -> str:
        return f"Metrics(fronts={sorted({k[1] for k in self._turn_children})})"

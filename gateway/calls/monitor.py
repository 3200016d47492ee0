"""Live turn events for dashboards: every front door publishes, watchers read.

Rules of this file:
- A turn publishes one `TurnEvent` after it is answered: front door,
  instance, conversation, operation, action, outcome and latency. Never the
  caller's words, digits or audio, and never a key.
- Publishing costs one truth test when nobody watches (`if monitor.watchers`
  at the call site), and never blocks or awaits: each watcher has a bounded
  backlog; when it is full the oldest event is dropped and counted, and the
  watcher is told how many it missed.
- Everything runs on the event loop thread; no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import NamedTuple

import orjson


class TurnEvent(NamedTuple):
    front: str
    instance: str
    conversation: str
    operation: str
    action: str | None
    outcome: str
    latency_ms: float
    time: float  # POSIX seconds when the turn was answered

    def frame(self) -> bytes:
        return orjson.dumps(
            {
                "type": "turn",
                "time": round(self.time, 3),
                "front": self.front,
                "instance": self.instance,
                "conversation": self.conversation,
                "operation": self.operation,
                "action": self.action,
                "outcome": self.outcome,
                "latency_ms": round(self.latency_ms, 3),
            }
        )


class Watcher:
    """One reader: an optional instance filter and a bounded backlog."""

    __slots__ = ("_wake", "backlog", "dropped", "instances", "limit")

    def __init__(self, instances: frozenset[str] | None, limit: int) -> None:
        self.instances = instances
        self.limit = limit
        self.backlog: deque[TurnEvent] = deque()
        self.dropped = 0  # missed since the last `take`
        self._wake = asyncio.Event()

    def offer(self, event: TurnEvent) -> None:
        if self.instances is not None and event.instance not in self.instances:
            return
        if len(self.backlog) >= self.limit:
            self.backlog.popleft()
            self.dropped += 1
        self.backlog.append(event)
        self._wake.set()

    async def take(self) -> tuple[list[TurnEvent], int]:
        """Wait for events; return them all and how many were dropped before them."""
        while not self.backlog:
            self._wake.clear()
            await self._wake.wait()
        events = list(self.backlog)
        self.backlog.clear()
        dropped, self.dropped = self.dropped, 0
        return events, dropped

    def __repr__(self) -> str:
        where = "all" if self.instances is None else ",".join(sorted(self.instances))
        return f"Watcher({where}, backlog={len(self.backlog)}/{self.limit})"


class Monitor:
    def __init__(self, backlog: int = 1000) -> None:
        self.backlog = backlog
        self.watchers: list[Watcher] = []
        self.dropped_total = 0

    def watch(self, instances: frozenset[str] | None = None) -> Watcher:
        watcher = Watcher(instances, self.backlog)
        self.watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)

    def publish(
        self,
        front: str,
        instance: str,
        conversation: str,
        operation: str,
        action: str | None,
        outcome: str,
        seconds: float,
    ) -> None:
        event = TurnEvent(
            front, instance, conversation, operation, action, outcome, seconds * 1e3, time.time()
        )
        for watcher in self.watchers:
            before = watcher.dropped
            watcher.offer(event)
            self.dropped_total += watcher.dropped - before

    def __repr__(self) -> str:
        return f"Monitor(watchers={len(self.watchers)}, dropped={self.dropped_total})"

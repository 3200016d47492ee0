"""A circuit breaker per backend (a bot or a remote navigator).

Rules of this file:
- Closed: every call goes through. `failures` consecutive failures open it.
- Open: no call goes through (the dialogue service answers with the
  instance's fallback at once) until `reset_seconds` have passed.
- Half-open: one probe call goes through; its success closes the breaker,
  its failure opens it again for another `reset_seconds`. Other calls made
  while the probe is out are refused as if open.
- The clock is passed in, so the state machine is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

State = Literal["closed", "open", "half_open"]
STATE_VALUES: Mapping[State, int] = {"closed": 0, "open": 1, "half_open": 2}


class Breaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_probing", "failures", "name",
                 "opened", "reset_seconds", "state")  # fmt: skip

    def __init__(
        self,
        name: str,
        failures: int = 5,
        reset_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self.state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        # How many times it has opened, for the metrics.
        self.opened = 0

    def allow(self) -> bool:
        """Whether a call may go to the backend now."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self._clock() - self._opened_at < self.reset_seconds:
                return False
            self.state = "half_open"
            self._probing = False
        # Half-open: only one probe at a time.
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        if self.state != "closed":
            self.state = "closed"
            self._probing = False

    def failure(self) -> None:
        if self.state == "half_open":
            self._open()
            return
        self._failures += 1
        if self.state == "closed" and self._failures >= self.failures:
            self._open()

    def _open(self) -> None:
        self.state = "open"
        self._opened_at = self._clock()
        self._probing = False
        self._failures = 0
        self.opened += 1

    def __repr__(self) -> str:
        return f"Breaker({self.name!r}, state={self.state}, failures={self._failures})"


class BreakerCollector(Collector):
    """`ivrgw_breaker_state{backend}` and `ivrgw_breaker_opened_total{backend}`."""

    def __init__(self, breakers: Callable[[], Iterator[Breaker]]) -> None:
        self._breakers = breakers

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "ivrgw_breaker_state",
            "Circuit breaker state per backend: 0 closed, 1 open, 2 half-open.",
            labels=("backend",),
        )
        opened = CounterMetricFamily(
            "ivrgw_breaker_opened", "Times a backend's breaker opened.", labels=("backend",)
        )
        for b in self._breakers():
            state.add_metric([b.name], STATE_VALUES[b.state])
            opened.add_metric([b.name], b.opened)
        yield state
        yield opened

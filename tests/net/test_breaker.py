from __future__ import annotations

from gateway.net.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = Breaker("bot", failures=3, reset_seconds=10, clock=Clock())
    b.failure()
    b.failure()
    b.success()  # a success in between starts the count again
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow() and b.opened == 1


def test_breaker_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    b = Breaker("bot", failures=1, reset_seconds=10, clock=clock)
    b.failure()
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10.0
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # the probe is out: others still get the fallback
    b.failure()  # the probe failed: open for another reset period
    assert b.state == "open" and b.opened == 2
    clock.now = 15.0
    assert not b.allow()
    clock.now = 20.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.allow()

from __future__ import annotations

import asyncio

import pytest

from gateway import errors
from gateway.calls.idempotency import KeyReused, TurnCache


def test_first_claim_runs_and_a_retry_gets_its_outcome() -> None:
    cache = TurnCache()
    entry, first = cache.claim("k", "sig")
    assert first
    entry.settle("reply")
    again, first = cache.claim("k", "sig")
    assert not first and again.result() == "reply" and cache.replays == 1


def test_same_key_with_another_fingerprint_is_refused() -> None:
    cache = TurnCache()
    cache.claim("k", "sig")
    with pytest.raises(KeyReused):
        cache.claim("k", "other")


def test_a_stored_error_is_raised_again() -> None:
    cache = TurnCache()
    entry, _ = cache.claim("k", 1)
    entry.settle(errors.ConversationNotFound())
    again, _ = cache.claim("k", 1)
    with pytest.raises(errors.ConversationNotFound):
        again.result()


def test_a_retry_waits_for_the_turn_in_flight() -> None:
    async def scenario() -> object:
        cache = TurnCache()
        entry, _ = cache.claim("k", 1)
        retry, first = cache.claim("k", 1)
        assert not first
        waiter = asyncio.create_task(retry.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        entry.settle("late reply")
        return await waiter

    assert asyncio.run(scenario()) == "late reply"


def test_the_cache_is_bounded_oldest_first() -> None:
    cache = TurnCache(max_entries=3)
    for k in range(5):
        cache.claim(k, k)
    assert len(cache) == 3
    _, first = cache.claim(0, 0)  # forgotten: a new claim
    assert first

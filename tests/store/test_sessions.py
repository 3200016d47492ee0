from __future__ import annotations

import pytest

from gateway import errors
from gateway.dialogue.navigator import DialogueState
from gateway.store.sessions import Session, SessionStore


def session(conv: str, now: float, instance: str = "i") -> Session:
    return Session((instance, conv), None, DialogueState(), now, "1", "2", False)


def test_concurrency_limit_and_duplicates_change_nothing() -> None:
    store = SessionStore(60)
    store.add(session("a", 0), limit=2)
    with pytest.raises(errors.ConversationDuplicated):
        store.add(session("a", 1), limit=2)
    store.add(session("b", 0), limit=2)
    with pytest.raises(errors.ConcurrencyLimitExceeded, match="limit of 2"):
        store.add(session("c", 0), limit=2)
    assert len(store) == 2 and store.counts() == {"i": 2}
    store.remove(("i", "a"))
    store.add(session("c", 0), limit=2)
    assert store.counts() == {"i": 2}


def test_idle_sessions_expire_and_leave_nothing_behind() -> None:
    store = SessionStore(idle_timeout=10)
    for n in range(1000):
        store.add(session(str(n), now=0.0), limit=10_000)
    store.get(("i", "7"), now=5.0)  # touched: stays
    expired = store.expire(now=12.0)
    assert len(expired) == 999
    assert len(store) == 1 and store.count("i") == 1
    assert store.expire(now=16.0)[0].key == ("i", "7")
    assert len(store) == 0 and store.count("i") == 0
    with pytest.raises(errors.ConversationNotFound):
        store.get(("i", "7"), now=17.0)

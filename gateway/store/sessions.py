"""Live conversations, in memory, keyed by (InstanceId, ConversationId).

One dict holds every session in order of last activity (a touched session is
moved to the end), so expiring idle sessions walks only the expired ones from
the front. Per-instance counts enforce each instance's Concurrency limit.
A session is a small slotted object whose config and bot are shared with
every other conversation of its instance; its dialogue state is a frozen
value replaced on each turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.dialogue.navigator import DialogueState

Key = tuple[str, str]


class Session:
    __slots__ = (
        "busy", "called", "calling", "debug", "instance", "key", "last_seen", "started", "state",
    )  # fmt: skip

    def __init__(
        self,
        key: Key,
        instance: Any,
        state: DialogueState,
        now: float,
        calling: str,
        called: str,
        debug: bool,
    ) -> None:
        self.key = key
        # The instance as it was at BeginDialogue: a live conversation keeps
        # the config it began with.
        self.instance = instance
        self.state = state
        self.started = now
        self.last_seen = now
        self.calling = calling
        self.called = called
        self.debug = debug
        # Set while a turn waits on a network bot: later turns wait behind it.
        self.busy: Any = None

    def __repr__(self) -> str:
        return f"Session(key={self.key!r}, turn={self.state.turn}, debug={self.debug})"


@dataclass(frozen=True, slots=True)
class Expired:
    key: Key
    idle_seconds: float


class SessionStore:
    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self._sessions: dict[Key, Session] = {}
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, instance_id: str) -> int:
        return self._counts.get(instance_id, 0)

    def counts(self) -> dict[str, int]:
        """Live conversations per instance (instances with none are absent)."""
        return dict(self._counts)

    def _set_count(self, instance_id: str, n: int) -> None:
        if n:
            self._counts[instance_id] = n
        else:
            self._counts.pop(instance_id, None)

    def check_can_begin(self, key: Key, limit: int) -> None:
        """Raise if `key` is live or the instance is at its limit; change nothing."""
        if key in self._sessions:
            raise errors.ConversationDuplicated()
        if self._counts.get(key[0], 0) >= limit:
            raise errors.ConcurrencyLimitExceeded(
                f"The instance has reached its Concurrency limit of {limit} live conversations."
            )

    def add(self, session: Session, limit: int) -> None:
        self.check_can_begin(session.key, limit)
        self._sessions[session.key] = session
        self._set_count(session.key[0], self._counts.get(session.key[0], 0) + 1)

    def get(self, key: Key, now: float) -> Session:
        """The live session for `key`, marked active now."""
        sessions = self._sessions
        session = sessions.pop(key, None)
        if session is None:
            raise errors.ConversationNotFound()
        session.last_seen = now
        sessions[key] = session
        return session

    def remove(self, key: Key) -> Session:
        session = self._sessions.pop(key, None)
        if session is None:
            raise errors.ConversationNotFound()
        self._set_count(key[0], self._counts[key[0]] - 1)
        return session

    def expire(self, now: float) -> list[Expired]:
        """Remove sessions idle for longer than the idle timeout."""
        deadline = now - self.idle_timeout
        # One pass from the front (least recently active), then remove: popping
        # while iterating from the front again would rescan removed slots.
        stale: list[Session] = []
        for session in self._sessions.values():
            if session.last_seen > deadline:
                break
            stale.append(session)
        expired: list[Expired] = []
        for session in stale:
            self.remove(session.key)
            expired.append(Expired(session.key, now - session.last_seen))
        return expired

    def __repr__(self) -> str:
        return f"SessionStore(live={len(self._sessions)}, instances={len(self._counts)})"

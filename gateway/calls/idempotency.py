"""Turn idempotency: a retried turn gets the first reply, and runs once.

A front door names each turn with a key that a retry repeats: the RPC API
uses the request's signature nonce (`SignatureNonce` or
`x-acs-signature-nonce`), a PBX adapter its turn sequence. With the key goes
a fingerprint of the request (its signature, or its raw bytes): a retry must
be the same request, not merely reuse the key.

Rules of this file:
- `claim` is called before the turn runs and returns the key's entry and
  whether this claim is the first. The first claimer runs the turn and
  `settle`s the entry with its outcome; a later claim with the same
  fingerprint `wait`s for that outcome. A later claim with another
  fingerprint raises `KeyReused`.
- An outcome is a result (the service's step, or None) or the
  `GatewayError` the turn raised; a retry sees the same.
- The cache is bounded by count; the oldest keys are forgotten first. A
  forgotten key's retry is refused by the nonce check, never run twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from gateway import errors


class KeyReused(Exception):
    """The key was used before by a different request."""


class Entry:
    __slots__ = ("fingerprint", "future", "outcome")

    def __init__(self, fingerprint: object) -> None:
        self.fingerprint = fingerprint
        self.future: asyncio.Future[Any] | None = None
        self.outcome: object = _PENDING

    def result(self) -> Any:
        """The stored outcome: the result, or the stored error raised again."""
        if isinstance(self.outcome, errors.GatewayError):
            raise self.outcome
        return self.outcome

    async def wait(self) -> Any:
        if self.outcome is _PENDING:
            if self.future is None:
                self.future = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.future)
        return self.result()

    def settle(self, outcome: object) -> None:
        """Store the turn's outcome and wake any retry waiting on it."""
        self.outcome = outcome
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    def __repr__(self) -> str:
        done = self.outcome is not _PENDING
        return f"Entry(done={done})"


_PENDING = object()


class TurnCache:
    __slots__ = ("_entries", "max_entries", "replays")

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        # An OrderedDict, not a dict: forgetting the oldest entry is O(1)
        # (`next(iter(dict))` scans the deleted slots a dict keeps at its
        # front, so evicting from a plain dict slows down as it goes).
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.replays = 0

    def claim(self, key: Hashable, fingerprint: object) -> tuple[Entry, bool]:
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise KeyReused()
            self.replays += 1
            return entry, False
        entry = entries[key] = Entry(fingerprint)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
        return entry, True

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TurnCache(entries={len(self._entries)}, replays={self.replays})"

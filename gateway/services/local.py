"""The local dialogue service: the built-in navigator with the instance's bot.

It owns the clock and the session store; the navigator it drives is pure.
With the embedded rules bot a turn never awaits anything, so no two turns of
one conversation can interleave; a bot that does I/O will need a
per-conversation lock here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway import errors
from gateway.dialogue import navigator
from gateway.dialogue.navigator import AskBot, Done
from gateway.dialogue.operations import (
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Operation,
    SilenceTimeout,
)
from gateway.store.instances import Instance, InstanceRegistry
from gateway.store.sessions import Session, SessionStore

# A tuple, not `Dialogue | CollectedNumber`: the union would be built anew on
# every call.
_CALLER_INPUT = (Dialogue, CollectedNumber)


class LocalDialogueService:
    def __init__(
        self,
        instances: InstanceRegistry,
        sessions: SessionStore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instances = instances
        self.sessions = sessions
        self.clock = clock

    def _instance(self, instance_id: str) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise errors.InstanceNotFound()
        return instance

    @staticmethod
    def _finish(instance: Instance, step: navigator.Step) -> Done:
        if isinstance(step, AskBot):
            return navigator.resume(instance.navigation, step, instance.bot.answer(step.query))
        return step

    def run_sync(
        self, instance_id: str, conversation_id: str, op: Operation, debug: bool = False
    ) -> Done | None:
        now = self.clock()
        key = (instance_id, conversation_id)
        if isinstance(op, BeginDialogue):
            instance = self._instance(instance_id)
            if instance.status != "Published":
                raise errors.InstanceDisabled()
            # Refuse before doing any work, so a refused begin changes nothing.
            self.sessions.check_can_begin(key, instance.concurrency)
            done = self._finish(instance, navigator.begin(instance.navigation, op))
            session = Session(
                key, instance, done.state, now, op.calling_number, op.called_number, debug
            )
            self.sessions.add(session, instance.concurrency)
            return done

        try:
            if isinstance(op, EndDialogue):
                self.sessions.remove(key)
                return None
            session = self.sessions.get(key, now)
        except errors.ConversationNotFound:
            # A live conversation outlives its instance; an unknown one is
            # reported against the instance first, as the API documents.
            if self.instances.get(instance_id) is None:
                raise errors.InstanceNotFound() from None
            raise
        instance = session.instance
        cfg = instance.navigation
        if isinstance(op, SilenceTimeout):
            done = navigator.silence(cfg, session.state, op)
        elif isinstance(op, _CALLER_INPUT):
            done = self._finish(instance, navigator.handle(cfg, session.state, op))
        else:  # pragma: no cover - Operation is a closed union
            raise errors.InternalServerError()
        session.state = done.state
        return done

    async def run(
        self, instance_id: str, conversation_id: str, op: Operation, debug: bool = False
    ) -> Done | None:
        return self.run_sync(instance_id, conversation_id, op, debug)

    def expire(self) -> int:
        return len(self.sessions.expire(self.clock()))

    def __repr__(self) -> str:
        return f"LocalDialogueService({self.instances!r}, {self.sessions!r})"

"""The bridge: a call event from any front door becomes one dialogue operation.

Rules of this file:
- `operation` maps an event to its operation, purely: CallStarted is
  BeginDialogue, UserSaid Dialogue, DigitsEntered CollectedNumber, NoInput
  SilenceTimeout, CallEnded EndDialogue. The call id is the ConversationId.
- `run` answers one event with what the front door sends back, built by the
  front's `render` from the reply. It never raises for a switch: when the
  dialogue service fails, the caller gets the instance's fallback (its
  apology and final action), or, with no instance to take one from, an
  apology and a hang-up. A PBX never gets dead air.
- A front door that names its turns (a turn sequence, an event id) passes
  `key` and a request `fingerprint`: a retried turn gets the first rendered
  answer back, byte for byte, and runs once (calls.idempotency).
- Every turn is observed in `ivrgw_turn_duration_seconds` under the front's
  name, with outcome ok, fallback or error, and published to the live
  monitor (calls.monitor) when anyone watches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

from gateway import errors
from gateway.calls.events import (
    CallEnded,
    CallEvent,
    CallStarted,
    DigitsEntered,
    NoInput,
    UserSaid,
)
from gateway.calls.idempotency import KeyReused, TurnCache
from gateway.calls.monitor import Monitor
from gateway.dialogue import navigator
from gateway.dialogue.navigator import Done
from gateway.dialogue.operations import (
    EMPTY_VARS,
    Action,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Operation,
    Reply,
    SilenceTimeout,
)
from gateway.metrics import Metrics
from gateway.store.instances import Instance, InstanceRegistry
from gateway.store.recorder import Recorder

log = logging.getLogger("gateway.bridge")

T = TypeVar("T")
# What the front sends back, from the reply (None after EndDialogue) and the
# instance whose TTS and transfer settings apply (None when unknown).
Render = Callable[[Reply | None, Instance | None], T]
Service = Callable[[str, str, Operation, bool], Done | Awaitable[Done | None] | None]

NO_SERVICE = Reply(
    "抱歉，服务暂不可用，请稍后再拨。"
    "Sorry, this service is not available now. Please call again later.",
    Action.HANG_UP,
    False,
    "{}",
    0,
)


def operation(event: CallEvent) -> Operation:
    if isinstance(event, UserSaid):
        return Dialogue(event.text)
    if isinstance(event, DigitsEntered):
        return CollectedNumber(event.digits)
    if isinstance(event, NoInput):
        return SilenceTimeout()
    if isinstance(event, CallStarted):
        return BeginDialogue(event.calling, event.called, event.context)
    return EndDialogue()


OPERATION_NAMES = {
    Dialogue: "Dialogue",
    CollectedNumber: "CollectedNumber",
    SilenceTimeout: "SilenceTimeout",
    BeginDialogue: "BeginDialogue",
    EndDialogue: "EndDialogue",
}


class Bridge:
    def __init__(
        self,
        service: Service,
        instances: InstanceRegistry,
        metrics: Metrics,
        turns: TurnCache,
        monitor: Monitor | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.service = service
        # Conversation records (gateway.store.recorder); None: not recorded.
        self.recorder = recorder
        self.instances = instances
        self.metrics = metrics
        self.turns = turns
        self.monitor = Monitor() if monitor is None else monitor

    async def run(
        self,
        front: str,
        event: CallEvent,
        instance_id: str,
        render: Render[T],
        key: Hashable | None = None,
        fingerprint: object = None,
    ) -> T:
        if key is None:
            return await self._run(front, event, instance_id, render)
        try:
            entry, first = self.turns.claim((front, key), fingerprint)
        except KeyReused:
            # The same turn key with a different request: the switch moved
            # on without our answer (or lies); run it as a new turn.
            return await self._run(front, event, instance_id, render)
        if not first:
            rendered: T = await entry.wait()
            return rendered
        try:
            out = await self._run(front, event, instance_id, render)
        except BaseException:
            entry.settle(errors.InternalServerError())
            raise
        entry.settle(out)
        return out

    async def _run(self, front: str, event: CallEvent, instance_id: str, render: Render[T]) -> T:
        started = time.perf_counter()
        op = operation(event)
        name = OPERATION_NAMES[type(op)]
        outcome = "ok"
        instance = self.instances.get(instance_id)
        reply: Reply | None
        try:
            result = self.service(instance_id, event.call_id, op, False)
            done = result if result is None or type(result) is Done else await result  # type: ignore[misc]
            reply = None if done is None else done.reply
            if done is not None and done.outcome == "fallback":
                outcome = "fallback"
            if self.recorder is not None:
                self.recorder.turn(
                    front,
                    instance_id,
                    event.call_id,
                    op,
                    reply,
                    "" if done is None else done.outcome,
                    False,
                    event.cause if type(event) is CallEnded else "",
                )
        except errors.GatewayError as exc:
            reply, outcome = self._failed(event, instance, exc.code)
        except Exception:
            log.exception("turn failed", extra={"fields": {"front": front, "call": event.call_id}})
            reply, outcome = self._failed(event, instance, errors.InternalServerError.code)
        if reply is not None:
            self.metrics.count_reply(reply.action)
        out = render(reply, instance)
        elapsed = time.perf_counter() - started
        self.metrics.observe_turn(name, front, outcome, elapsed)
        if self.monitor.watchers:
            action = None if reply is None else reply.action.value
            self.monitor.publish(front, instance_id, event.call_id, name, action, outcome, elapsed)
        return out

    def _failed(
        self, event: CallEvent, instance: Instance | None, code: str
    ) -> tuple[Reply | None, str]:
        """The reply when the service refused or failed: never silence."""
        self.metrics.count_error(code)
        if isinstance(event, CallEnded):
            # The call is gone; an unknown or expired conversation is fine.
            return None, "error"
        log.warning(
            "turn answered with the fallback",
            extra={"fields": {"call": event.call_id, "code": code}},
        )
        if instance is None:
            return NO_SERVICE, "fallback"
        variables = event.context if isinstance(event, CallStarted) else EMPTY_VARS
        return navigator.fallback_reply(instance.navigation, variables), "fallback"

    def __repr__(self) -> str:
        return f"Bridge({self.turns!r})"

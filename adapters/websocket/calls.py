"""Websocket calls: who owns each, their turns in order, and the grace after a drop.

Rules of this file:
- A call id is live in one place for the whole gateway (`Calls.live`), owned
  by one socket at a time (`Call.owner`), or by none during its grace period
  after that socket closed. `resume` moves a call to the asking socket.
- A call's turns run strictly in order: a turn that arrives while one is in
  flight waits in the call's backlog (made on first need). A call with
  nothing in flight runs its turn inline (`eager.start`): with the embedded
  navigator the turn never suspends, so no task, queue or callback is made.
  A turn that does suspend (a bot, a remote navigator) goes on in a task, and
  other calls carry on meanwhile.
- Each answer goes to the call's owner when it has one; it is also kept as
  the call's last reply, which `resume` sends again.
- A call left without an owner for `grace` seconds is ended with EndDialogue
  through the bridge; so is every call left at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol

from adapters.websocket import codec, eager
from gateway.calls.bridge import Bridge
from gateway.calls.events import CallEnded
from gateway.dialogue.operations import Reply
from gateway.store.instances import Instance

log = logging.getLogger("adapters.websocket")

FRONT = "websocket"
GRACE_CAUSE = "WEBSOCKET_GRACE_EXPIRED"
SHUTDOWN_CAUSE = "GATEWAY_SHUTDOWN"


class Owner(Protocol):
    """A socket, as calls see it."""

    calls: dict[str, Call]

    def push(self, frame: str) -> None: ...


class Call:
    __slots__ = ("backlog", "busy", "ending", "id", "instance_id", "last", "owner", "timer")

    def __init__(self, call_id: str, instance_id: str, owner: Owner | None) -> None:
        self.id = call_id
        self.instance_id = instance_id
        self.owner = owner
        self.busy = False
        self.backlog: deque[codec.Turn] | None = None
        self.last: Reply | None = None
        # An `end` is accepted (or the grace ran out): no more turns.
        self.ending = False
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        waiting = len(self.backlog) if self.backlog else 0
        state = "ending" if self.ending else ("busy" if self.busy else "idle")
        return f"Call({self.id!r}, {self.instance_id!r}, {state}, backlog={waiting})"


def _keep(reply: Reply | None, instance: Instance | None) -> Reply | None:
    return reply


class Calls:
    def __init__(self, bridge: Bridge, grace: float) -> None:
        self.bridge = bridge
        self.grace = grace
        self.live: dict[str, Call] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.expired = 0
        self.closed = False

    # -- ownership -------------------------------------------------------------

    def begin(self, call_id: str, instance_id: str, owner: Owner) -> Call:
        call = self.live[call_id] = owner.calls[call_id] = Call(call_id, instance_id, owner)
        return call

    def attach(self, call: Call, owner: Owner) -> None:
        """Move a call to `owner` (a resume), from its grace period or another socket."""
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        previous = call.owner
        if previous is not None and previous is not owner:
            previous.calls.pop(call.id, None)
        call.owner = owner
        owner.calls[call.id] = call

    def detach(self, owner: Owner) -> int:
        """A socket closed: its calls wait `grace` seconds for a resume."""
        if not owner.calls:
            return 0
        loop = asyncio.get_running_loop()
        count = len(owner.calls)
        for call in owner.calls.values():
            call.owner = None
            if not call.ending:
                call.timer = loop.call_later(self.grace, self._expire, call)
        owner.calls.clear()
        return count

    def _expire(self, call: Call) -> None:
        call.timer = None
        if (
            self.closed
            or call.owner is not None
            or call.ending
            or self.live.get(call.id) is not call
        ):
            return
        self.expired += 1
        log.info(
            "websocket call ended after its grace period",
            extra={"fields": {"call": call.id, "instance": call.instance_id, "grace": self.grace}},
        )
        call.ending = True
        self.submit(call, codec.Turn(None, CallEnded(call.id, GRACE_CAUSE)))

    # -- turns -----------------------------------------------------------------

    def submit(self, call: Call, turn: codec.Turn) -> None:
        """Run `turn` now, or after the call's turns in flight."""
        if call.busy:
            if call.backlog is None:
                call.backlog = deque()
            call.backlog.append(turn)
            return
        self._drive(call, turn)

    def _drive(self, call: Call, turn: codec.Turn) -> None:
        call.busy = True
        while True:
            coro = self.bridge.run(FRONT, turn.event, call.instance_id, _keep)
            try:
                done, value = eager.start(coro)
            except Exception:
                self._failed(call, turn)
            else:
                if not done:
                    loop = asyncio.get_running_loop()
                    task = loop.create_task(self._finish(call, turn, coro, value))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                    return
                self._answered(call, turn, value)
            backlog = call.backlog
            if not backlog:
                call.busy = False
                return
            turn = backlog.popleft()

    async def _finish(
        self, call: Call, turn: codec.Turn, coro: Coroutine[Any, Any, Reply | None], waiting: Any
    ) -> None:
        try:
            reply = await eager.finish(coro, waiting)
        except Exception:
            self._failed(call, turn)
        else:
            self._answered(call, turn, reply)
        if call.backlog:
            self._drive(call, call.backlog.popleft())
        else:
            call.busy = False

    def _failed(self, call: Call, turn: codec.Turn) -> None:
        """A bug, not a backend failure (the bridge answers those): say so, carry on."""
        log.exception("websocket turn failed", extra={"fields": {"call": call.id}})
        if call.owner is not None:
            message = "the turn failed; the call goes on"
            call.owner.push(codec.error("InternalServerError", message, turn.id, call.id))

    def _answered(self, call: Call, turn: codec.Turn, reply: Reply | None) -> None:
        owner = call.owner
        if reply is None or type(turn.event) is CallEnded:
            # The call is over: it leaves the gateway after its last turn.
            if self.live.get(call.id) is call:
                del self.live[call.id]
            if owner is not None:
                owner.calls.pop(call.id, None)
                owner.push(codec.ended(call.id, turn.id))
            return
        call.last = reply
        if owner is not None:
            owner.push(codec.action(call.id, turn.id, reply))

    # -- shutdown --------------------------------------------------------------

    async def close(self) -> None:
        """End every call left (owned or in its grace period) with EndDialogue."""
        self.closed = True
        for call in self.live.values():
            if call.timer is not None:
                call.timer.cancel()
                call.timer = None
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        calls = list(self.live.values())
        self.live.clear()
        for call in calls:
            event = CallEnded(call.id, SHUTDOWN_CAUSE)
            with contextlib.suppress(Exception):
                await self.bridge.run(FRONT, event, call.instance_id, _keep)
        if calls:
            log.info("websocket calls ended at shutdown", extra={"fields": {"count": len(calls)}})

    def __repr__(self) -> str:
        return f"Calls(live={len(self.live)}, in_flight={len(self.tasks)}, grace={self.grace})"

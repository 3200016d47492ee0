"""The local dialogue service: the built-in navigator with the instance's bot.

It owns the clock, the session store, the turn budget and the breakers; the
navigator it drives is pure.

Rules of this file:
- `run_sync` answers a turn. With the embedded rules bot nothing is awaited
  and it returns the navigator's `Done` (or None for EndDialogue). When the
  turn must wait (a network bot, a remote navigator, or an earlier turn of
  the same conversation still waiting) it returns an awaitable of the same.
- A network bot's turn is bounded by the instance's turn budget
  (FallbackConfig.TurnBudget). A failure, a late answer or an open breaker
  ends the turn with the instance's fallback (outcome "fallback"); the
  caller never waits past the budget.
- Turns of one conversation run one at a time, in arrival order: a turn
  that arrives while another waits on the bot waits behind it.
- An instance in remote mode hands every operation to its remote service;
  a conversation begun on it stays with that Instance (and its remote)
  until it ends, even if the instance is modified or deleted meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from gateway import errors
from gateway.dialogue import navigator
from gateway.dialogue.bot import BotContext
from gateway.dialogue.navigator import AskBot, Done
from gateway.dialogue.operations import (
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Operation,
    SilenceTimeout,
)
from gateway.net.breaker import Breaker
from gateway.store.instances import Instance, InstanceRegistry
from gateway.store.sessions import Session, SessionStore

log = logging.getLogger("gateway.service")

# A tuple, not `Dialogue | CollectedNumber`: the union would be built anew on
# every call.
_CALLER_INPUT = (Dialogue, CollectedNumber)

Result = Done | None
Answer = Done | Awaitable[Result] | None


class RemoteService(Protocol):
    """What the local service needs of a remote navigator (services.remote)."""

    async def run(
        self, instance: Instance, conversation_id: str, op: Operation, debug: bool
    ) -> Result: ...


class LocalDialogueService:
    def __init__(
        self,
        instances: InstanceRegistry,
        sessions: SessionStore,
        clock: Callable[[], float] = time.monotonic,
        breakers: Mapping[str, Breaker] | None = None,
        remotes: Mapping[str, RemoteService] | None = None,
    ) -> None:
        self.instances = instances
        self.sessions = sessions
        self.clock = clock
        # One breaker per network bot, by bot name.
        self.breakers = dict(breakers or {})
        self.remotes = dict(remotes or {})
        # Remote-mode conversations begun here: the Instance each began with
        # and when it was last seen, least recently active first. A live one
        # keeps its instance after a Modify or a Delete, as local ones do;
        # `expire` forgets the idle ones with the sessions' idle timeout.
        self._remote_calls: dict[tuple[str, str], tuple[Instance, float]] = {}

    def _instance(self, instance_id: str) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise errors.InstanceNotFound()
        return instance

    def run_sync(
        self, instance_id: str, conversation_id: str, op: Operation, debug: bool = False
    ) -> Answer:
        now = self.clock()
        key = (instance_id, conversation_id)
        instance = self.instances.get(instance_id)
        remote_calls = self._remote_calls
        if remote_calls and not isinstance(op, BeginDialogue):
            begun = remote_calls.pop(key, None)
            if begun is not None:
                if not isinstance(op, EndDialogue):
                    remote_calls[key] = (begun[0], now)
                return self.remotes[begun[0].remote].run(begun[0], conversation_id, op, debug)
        if instance is not None and instance.remote:
            if isinstance(op, BeginDialogue):
                if instance.status != "Published":
                    raise errors.InstanceDisabled()
                remote_calls.pop(key, None)
                remote_calls[key] = (instance, now)
            # Not begun here (before a restart, or unknown): the remote decides.
            return self.remotes[instance.remote].run(instance, conversation_id, op, debug)

        if isinstance(op, BeginDialogue):
            if instance is None:
                raise errors.InstanceNotFound()
            if instance.status != "Published":
                raise errors.InstanceDisabled()
            # Refuse before doing any work, so a refused begin changes nothing.
            self.sessions.check_can_begin(key, instance.concurrency)
            step = navigator.begin(instance.navigation, op)
            session = Session(
                key, instance, step.state, now, op.calling_number, op.called_number, debug
            )
            if isinstance(step, AskBot):
                if instance.async_bot is not None:
                    # The conversation is live (and counted) while its greeting waits.
                    self.sessions.add(session, instance.concurrency)
                    return self._ask(session, step, now)
                step = navigator.resume(
                    instance.navigation, step, instance.rules.answer(step.query)
                )
            session.state = step.state
            self.sessions.add(session, instance.concurrency)
            return step

        try:
            if isinstance(op, EndDialogue):
                self.sessions.remove(key)
                return None
            session = self.sessions.get(key, now)
        except errors.ConversationNotFound:
            # A live conversation outlives its instance; an unknown one is
            # reported against the instance first, as the API documents.
            if instance is None:
                raise errors.InstanceNotFound() from None
            raise
        if session.busy is not None:
            return self._after(session.busy, instance_id, conversation_id, op, debug)
        instance = session.instance
        cfg = instance.navigation
        if isinstance(op, SilenceTimeout):
            done = navigator.silence(cfg, session.state, op)
        elif isinstance(op, _CALLER_INPUT):
            step = navigator.handle(cfg, session.state, op)
            if isinstance(step, AskBot):
                if instance.async_bot is not None:
                    return self._ask(session, step, now)
                done = navigator.resume(cfg, step, instance.rules.answer(step.query))
            else:
                done = step
        else:  # pragma: no cover - Operation is a closed union
            raise errors.InternalServerError()
        session.state = done.state
        return done

    async def run(
        self, instance_id: str, conversation_id: str, op: Operation, debug: bool = False
    ) -> Result:
        result = self.run_sync(instance_id, conversation_id, op, debug)
        if result is None or isinstance(result, Done):
            return result
        return await result

    async def _after(
        self,
        busy: asyncio.Future[None],
        instance_id: str,
        conversation_id: str,
        op: Operation,
        debug: bool,
    ) -> Result:
        """Run a turn once the conversation's turn in progress has finished."""
        await asyncio.shield(busy)
        return await self.run(instance_id, conversation_id, op, debug)

    async def _ask(self, session: Session, step: AskBot, started: float) -> Done:
        """Ask the instance's network bot within the turn budget."""
        instance = session.instance
        cfg = instance.navigation
        bot = instance.async_bot
        assert bot is not None
        busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        session.busy = busy
        try:
            breaker = self.breakers.get(bot.name)
            if breaker is not None and not breaker.allow():
                done = navigator.fallback(cfg, step)
            else:
                done = await self._answer(session, step, started, breaker)
            session.state = done.state
            return done
        finally:
            session.busy = None
            busy.set_result(None)

    async def _answer(
        self, session: Session, step: AskBot, started: float, breaker: Breaker | None
    ) -> Done:
        instance = session.instance
        cfg = instance.navigation
        bot = instance.async_bot
        assert bot is not None
        remaining = cfg.fallback.turn_budget_ms / 1000 - (self.clock() - started)
        context = BotContext(instance.instance_id, session.key[1])
        why = ""
        try:
            if remaining <= 0:
                raise errors.BackendTimeout("the turn budget was spent before the bot was asked")
            # The bot is given the budget; the timeout here guards a bot that
            # does not keep to it.
            async with asyncio.timeout(remaining):
                answer = await bot.ask(step.query, context, remaining)
        except errors.BackendError as exc:
            why = exc.kind
        except TimeoutError:
            why = "timeout"
        except Exception:
            log.exception("bot failed", extra={"fields": {"bot": bot.name}})
            why = "error"
        else:
            if breaker is not None:
                breaker.success()
            return navigator.resume(cfg, step, answer)
        if breaker is not None:
            breaker.failure()
        log.warning(
            "bot fallback",
            extra={
                "fields": {
                    "bot": bot.name,
                    "instance": instance.instance_id,
                    "conversation": session.key[1],
                    "why": why,
                }
            },
        )
        return navigator.fallback(cfg, step)

    def expire(self) -> int:
        now = self.clock()
        deadline = now - self.sessions.idle_timeout
        stale = []
        for key, (_, last_seen) in self._remote_calls.items():
            if last_seen > deadline:
                break
            stale.append(key)
        for key in stale:
            del self._remote_calls[key]
        return len(self.sessions.expire(now))

    def __repr__(self) -> str:
        return f"LocalDialogueService({self.instances!r}, {self.sessions!r})"

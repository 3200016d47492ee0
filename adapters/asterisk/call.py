"""One call in Stasis: a small state machine fed by ARI events and its own timers.

Rules of this file:
- Everything that happens to a call goes through its queue and is handled
  by its one task, in order: ARI events, the inter-digit and silence timers,
  and utterances injected by another front door. No two turns of a call
  overlap, and nothing runs after the call has ended.
- A prompt is the reply's text synthesised by the gateway (or media the
  reply names), played with `POST /channels/{id}/play`. After it finishes:
  a Broadcast listens (the silence timer starts, the gateway owns it); a
  transfer continues or redirects the channel; a hang-up deletes it.
- Barge-in: during an interruptible prompt the first digit stops the
  playback (`DELETE /playbacks/{id}`) and digits keep being collected.
  During a non-interruptible prompt digits are ignored until it ends.
- Digits end with `#`, the inter-digit timeout, or the maximum length.
- The call ends exactly once (EndDialogue), on StasisEnd, ChannelDestroyed,
  or a REST 404/409 (the channel is gone or not in Stasis). Timers are
  cancelled and the call is forgotten.
- A recorded call is tapped (recording.py) after the answer and before the
  first turn; its recording is finished and fetched off this task when the
  call ends. A recording's failure never touches the call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple

from adapters.asterisk import codec
from adapters.asterisk.ari import AriStatus
from gateway import errors
from gateway.calls.events import CallEnded, CallEvent, DigitsEntered, NoInput
from gateway.dialogue.operations import Action, Reply
from gateway.store.instances import Instance

if TYPE_CHECKING:
    from adapters.asterisk.recording import CallRecording
    from adapters.asterisk.transport import AsteriskAdapter

log = logging.getLogger("adapters.asterisk")

ERROR_MEDIA = "sound:an-error-has-occurred"
_ids = itertools.count(1)
_PREFIX = os.urandom(4).hex()


class Timer(NamedTuple):
    kind: str  # "digits" or "silence"
    token: int


class Inject(NamedTuple):
    event: CallEvent
    done: asyncio.Future[Reply | None]


Item = codec.Event | Timer | Inject


class Call:
    def __init__(self, adapter: AsteriskAdapter, channel_id: str) -> None:
        self.adapter = adapter
        self.id = channel_id
        # The conversation and live-call key: the channel id, prefixed with the
        # server's name when the gateway serves several Asterisks (their channel
        # ids can be equal).
        self.conversation = adapter.prefix + channel_id
        self.instance_id = ""
        self.instance: Instance | None = None
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.reply: Reply | None = None
        self.playback: str | None = None  # the prompt playing now
        self.interruptible = True
        self.listening = False
        self.digits = ""
        self.max_digits = 32
        self._timer: asyncio.TimerHandle | None = None
        self._token = 0
        self.ended = False
        self.recording: CallRecording | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"ari-call-{self.id}")

    def feed(self, item: Item) -> None:
        if not self.ended:
            self.queue.put_nowait(item)

    async def inject(self, event: CallEvent) -> Reply | None:
        """Run an event from another front door (an utterance) in this call's order."""
        done: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self.feed(Inject(event, done))
        if self.ended:
            return None
        return await done

    # -- the loop ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self.ended:
                item = await self.queue.get()
                try:
                    await self._handle(item)
                except AriStatus as exc:
                    if exc.call_gone:
                        await self._end("gone")
                    else:
                        log.warning(
                            "ARI refused a call step",
                            extra={"fields": {"call": self.id, "status": exc.status}},
                        )
                except errors.BackendError as exc:
                    log.warning(
                        "ARI unreachable for a call step",
                        extra={"fields": {"call": self.id, "why": exc.kind}},
                    )
        finally:
            self._cancel_timer()
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if isinstance(item, Inject) and not item.done.done():
                    item.done.set_result(None)
            self.adapter.forget(self)

    async def _handle(self, item: Item) -> None:
        if isinstance(item, codec.Dtmf):
            await self._digit(item.digit)
        elif isinstance(item, codec.PlaybackFinished):
            if item.playback_id == self.playback:
                self.playback = None
                await self._after_prompt()
        elif isinstance(item, Timer):
            if item.token == self._token:
                self._timer = None
                if item.kind == "digits":
                    await self._submit_digits()
                elif self.listening:
                    await self._turn(NoInput(self.conversation))
        elif isinstance(item, Inject):
            try:
                reply = await self._barge_in_and_turn(item.event)
            except BaseException:
                item.done.set_result(None)
                raise
            item.done.set_result(reply)
        elif isinstance(item, codec.CallGone):
            await self._end(item.kind)
        elif isinstance(item, codec.StasisStart):
            await self._begin(item)

    # -- steps ------------------------------------------------------------------

    async def _begin(self, event: codec.StasisStart) -> None:
        instance_id, started = codec.call_started(event, self.adapter.config.default_instance)
        self.instance_id = instance_id
        if event.state != "Up":
            await self.adapter.ari.rest("POST", f"/channels/{self.id}/answer")
        self.recording = await self.adapter.start_recording(self)
        await self._turn(started._replace(call_id=self.conversation))

    async def _digit(self, digit: str) -> None:
        if not self.listening:
            return  # a non-interruptible prompt, or an action under way
        if self.playback is not None:
            # Barge-in: the first digit stops the prompt (ARI does not).
            playback, self.playback = self.playback, None
            try:
                await self.adapter.ari.rest("DELETE", f"/playbacks/{playback}")
            except AriStatus as exc:
                if exc.status != 404:  # already finished: nothing to stop
                    raise
        self._cancel_timer()
        if digit == "#":
            await self._submit_digits()
            return
        self.digits += digit
        if len(self.digits) >= self.max_digits:
            await self._submit_digits()
        else:
            self._arm("digits", self.adapter.config.inter_digit_ms / 1000)

    async def _submit_digits(self) -> None:
        digits, self.digits = self.digits, ""
        await self._turn(DigitsEntered(self.conversation, digits))

    async def _barge_in_and_turn(self, event: CallEvent) -> Reply | None:
        if self.playback is not None:
            playback, self.playback = self.playback, None
            try:
                await self.adapter.ari.rest("DELETE", f"/playbacks/{playback}")
            except AriStatus as exc:
                if exc.status != 404:
                    raise
        self.digits = ""
        return await self._turn(event)

    async def _turn(self, event: CallEvent) -> Reply | None:
        """Run one turn through the bridge and act on its reply."""
        self._cancel_timer()
        self.listening = False
        reply, instance = await self.adapter.turn(self, event)
        if instance is not None:
            self.instance = instance
        if reply is not None and not self.ended:
            await self._act(reply)
        return reply

    async def _act(self, reply: Reply) -> None:
        self.reply = reply
        self.digits = ""
        media = await self.adapter.media_for(reply, self.instance)
        listens = reply.action is Action.BROADCAST and reply.wait_seconds > 0
        if not media:
            await self._after_prompt()
            return
        playback = f"{_PREFIX}-{next(_ids)}"
        self.playback = playback
        self.interruptible = reply.interruptible
        # An interruptible prompt listens while it plays; the other kind after.
        self.listening = listens and reply.interruptible
        await self.adapter.ari.rest(
            "POST",
            f"/channels/{self.id}/play",
            {"media": ",".join(media), "playbackId": playback},
        )

    async def _after_prompt(self) -> None:
        reply = self.reply
        if reply is None:
            return
        action = reply.action
        if action is Action.BROADCAST or action is Action.REDIRECT_TO_PAGE:
            if reply.wait_seconds > 0 and action is Action.BROADCAST:
                self.listening = True
                if not self.digits:
                    self._arm("silence", reply.wait_seconds)
            return
        self.listening = False
        if action is Action.HANG_UP:
            await self.adapter.ari.rest("DELETE", f"/channels/{self.id}", {"reason": "normal"})
            return
        where = self.adapter.destination(reply)
        if isinstance(where, codec.Continue):
            await self.adapter.ari.rest(
                "POST",
                f"/channels/{self.id}/continue",
                {
                    "context": where.context,
                    "extension": where.extension,
                    "priority": str(where.priority),
                },
            )
        elif isinstance(where, codec.Redirect):
            await self.adapter.ari.rest(
                "POST", f"/channels/{self.id}/redirect", {"endpoint": where.endpoint}
            )
        else:
            # No destination configured: end the call rather than leave it in silence.
            await self.adapter.ari.rest("DELETE", f"/channels/{self.id}", {"reason": "normal"})

    async def _end(self, why: str) -> None:
        if self.ended:
            return
        self._cancel_timer()
        recording, self.recording = self.recording, None
        if recording is not None:
            self.adapter.finish_recording(self, recording)
        await self.adapter.turn(self, CallEnded(self.conversation, why))
        self.ended = True

    # -- timers -----------------------------------------------------------------

    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel_timer()
        self._token += 1
        timer = Timer(kind, self._token)
        self._timer = asyncio.get_running_loop().call_later(seconds, self.feed, timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._token += 1

    def __repr__(self) -> str:
        return f"Call({self.id!r}, instance={self.instance_id!r}, ended={self.ended})"


Turn = Callable[[Call, CallEvent], Awaitable[tuple[Reply | None, Instance | None]]]

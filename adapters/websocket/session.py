"""One client socket: frames in (checked, rate-limited, dispatched), frames out (bounded).

Rules of this file:
- The reader handles each text frame to the end before taking the next: the
  size cap, the socket's token bucket, the codec, then the call's turn (run
  inline when the call is idle, calls.py). Bad input gets an `error` frame
  and the socket stays open; a binary frame closes it with 1003, after the
  frames already queued.
- Frames out go through one queue and one writer task, the only caller of
  `send`. uvicorn's `send` waits while the transport's buffer is over its
  high-water mark, so a client that does not read stalls the writer and
  the queue fills. When it holds `send_queue` frames the reader stops
  taking frames (TCP then slows the client's sending) until the writer has
  taken it down to half. If that takes longer than `send_timeout`, the
  client is not reading: the queue is dropped and the socket closed with
  1008, and when the client has not taken the close frame either after
  `send_timeout` more, the connection is aborted. Answers of turns already
  running may take the queue over `send_queue`; at twice that the socket
  is closed at once. Memory per socket stays bounded by twice the queue,
  the transport's high-water mark and one frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import orjson

from adapters.websocket import codec
from adapters.websocket.calls import Call, Calls
from gateway.asgi import Receive, Send
from gateway.calls.events import CallEnded, CallStarted

log = logging.getLogger("adapters.websocket")

SLOW_READER = "slow_reader"


class Limits(NamedTuple):
    default_instance: str
    max_frame_bytes: int
    send_queue: int
    rate: float
    burst: float
    max_calls: int
    send_timeout: float


class Stats:
    """Counters every socket adds to, read at scrape time."""

    __slots__ = ("disconnects", "errors", "rate_limited")

    def __init__(self) -> None:
        self.disconnects: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.rate_limited = 0

    def count_disconnect(self, reason: str) -> None:
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1

    def __repr__(self) -> str:
        return f"Stats(disconnects={self.disconnects}, rate_limited={self.rate_limited})"


class Close(NamedTuple):
    code: int
    reason: str


def _transport_abort(send: Send) -> Callable[[], None] | None:
    """The transport's `abort`, when the server's `send` is a protocol's bound method
    (uvicorn's is); else None."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


class Session:
    __slots__ = (
        "abort_transport",
        "aborted",
        "burst",
        "calls",
        "closing",
        "default_instance",
        "draining",
        "hard_limit",
        "limit",
        "limits",
        "max_bytes",
        "out",
        "rate",
        "registry",
        "send",
        "sending",
        "stamp",
        "stats",
        "task",
        "tokens",
        "wake",
        "watchdog",
        "why",
    )

    def __init__(self, registry: Calls, send: Send, limits: Limits, stats: Stats) -> None:
        self.registry = registry
        self.send = send
        self.limits = limits
        self.stats = stats
        self.calls: dict[str, Call] = {}
        self.out: deque[str | Close] = deque()
        self.limit = limits.send_queue
        self.hard_limit = 2 * limits.send_queue
        self.draining: asyncio.Future[None] | None = None
        self.max_bytes = limits.max_frame_bytes
        self.default_instance = limits.default_instance
        self.rate = limits.rate
        self.burst = limits.burst
        self.tokens = limits.burst
        self.stamp = time.monotonic()
        self.sending = False
        self.wake: asyncio.Future[None] | None = None
        self.closing = False
        self.why = ""
        self.watchdog: asyncio.TimerHandle | None = None
        self.aborted = False
        self.abort_transport = _transport_abort(send)
        self.task = asyncio.current_task()

    @property
    def queued(self) -> int:
        return len(self.out) + self.sending

    # -- in ----------------------------------------------------------------------

    async def read(self, receive: Receive) -> int:
        """Frames until the socket closes; its close code."""
        on_text = self.on_text
        out = self.out
        limit = self.limit
        while True:
            message = await receive()
            text = message.get("text")
            if text is not None:
                on_text(text)
                if len(out) >= limit and not self.closing:
                    await self.drained()
            elif message["type"] == "websocket.disconnect":
                if "reason" not in message:
                    # uvicorn: the connection was lost, no close frame came (it says 1005).
                    return 1006
                return int(message.get("code", 1005))
            elif message.get("bytes") is not None:
                self.kick(1003, "binary frames are not accepted: send JSON text", "binary_frame")

    def on_text(self, text: str) -> None:
        if self.closing:
            return
        size = len(text)
        # A character is 1 to 4 bytes: encode only when the count is in doubt.
        if size * 4 > self.max_bytes and (
            size > self.max_bytes or len(text.encode()) > self.max_bytes
        ):
            self.error("FrameTooLarge", f"a frame holds at most {self.max_bytes} bytes")
            return
        now = time.monotonic()
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            self.stats.rate_limited += 1
            self.error("RateLimited", f"over {self.rate:g} frames/s on this socket", _id(text))
            return
        self.tokens = tokens - 1.0
        try:
            message = codec.parse(text, self.default_instance)
        except codec.WireError as exc:
            self.error(exc.code, exc.message, exc.id, exc.call_id)
            return
        if type(message) is codec.Turn:
            self.turn(message)
        elif type(message) is codec.Ping:
            self.push(codec.pong(message.id))
        elif type(message) is codec.Resume:
            self.resume(message)
        elif isinstance(message, codec.Partial):
            call = self.calls.get(message.call_id)
            if call is None or call.ending:
                self.unknown(message.id, message.call_id)

    def turn(self, turn: codec.Turn) -> None:
        event = turn.event
        call_id = event.call_id
        call = self.calls.get(call_id)
        if type(event) is CallStarted:
            if call_id in self.registry.live:
                self.error("DuplicateCall", "the call is already live", turn.id, call_id)
                return
            if len(self.calls) >= self.limits.max_calls:
                self.too_many(turn.id, call_id)
                return
            call = self.registry.begin(call_id, event.instance_id, self)
        elif call is None or call.ending:
            self.unknown(turn.id, call_id)
            return
        elif type(event) is CallEnded:
            call.ending = True
        self.registry.submit(call, turn)

    def resume(self, message: codec.Resume) -> None:
        live = self.registry.live
        for call_id in message.call_ids:
            call = live.get(call_id)
            if call is None or call.ending:
                self.unknown(message.id, call_id)
                continue
            if call.owner is not self and len(self.calls) >= self.limits.max_calls:
                self.too_many(message.id, call_id)
                continue
            self.registry.attach(call, self)
            if call.last is not None:
                self.push(codec.action(call_id, message.id, call.last, resumed=True))
            # Otherwise its first turn is still running: the answer comes here.

    def unknown(self, mid: codec.MessageId | None, call_id: str) -> None:
        self.error("UnknownCall", "no live call with this id on this socket", mid, call_id)

    def too_many(self, mid: codec.MessageId | None, call_id: str) -> None:
        limit = self.limits.max_calls
        self.error("TooManyCalls", f"at most {limit} live calls per socket", mid, call_id)

    def error(
        self,
        code: str,
        message: str,
        mid: codec.MessageId | None = None,
        call_id: str | None = None,
    ) -> None:
        errors = self.stats.errors
        errors[code] = errors.get(code, 0) + 1
        self.push(codec.error(code, message, mid, call_id))

    # -- out ---------------------------------------------------------------------

    async def drained(self) -> None:
        """Wait until the writer has taken the full queue down to half; close a client
        that lets it sit full for `send_timeout`."""
        self.draining = drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.limits.send_timeout):
                await drained
        except TimeoutError:
            self.slow()
        finally:
            self.draining = None

    def slow(self) -> None:
        reason = f"send queue full ({self.limit} frames): the client is not reading"
        self.kick(1008, reason, SLOW_READER)

    def push(self, frame: str) -> None:
        if self.closing:
            return
        out = self.out
        if len(out) >= self.hard_limit:
            self.slow()
            return
        out.append(frame)
        wake = self.wake
        if wake is not None:
            self.wake = None
            if not wake.done():
                wake.set_result(None)

    async def write(self) -> None:
        """The writer task: queued frames to `send`, in order, then the close."""
        out = self.out
        send = self.send
        loop = asyncio.get_running_loop()
        half = self.limit // 2
        try:
            while True:
                while out:
                    item = out.popleft()
                    self.sending = True
                    if isinstance(item, str):
                        await send({"type": "websocket.send", "text": item})
                    else:
                        await send(
                            {"type": "websocket.close", "code": item.code, "reason": item.reason}
                        )
                        if self.watchdog is not None:
                            self.watchdog.cancel()
                        return
                    self.sending = False
                    drained = self.draining
                    if drained is not None and len(out) <= half and not drained.done():
                        drained.set_result(None)
                self.wake = wake = loop.create_future()
                await wake
        except OSError:
            return  # the client went away (uvicorn's ClientDisconnected)
        finally:
            self.sending = False

    def kick(self, code: int, reason: str, why: str) -> None:
        """Close the socket: a slow reader's queue is dropped, otherwise it is sent first."""
        if self.closing:
            return
        if why == SLOW_READER:
            log.warning(
                "websocket client not reading: closing",
                extra={"fields": {"queued": len(self.out), "calls": len(self.calls)}},
            )
            self.out.clear()
        self.closing = True
        self.why = why
        self.stats.count_disconnect(why)
        self.out.append(Close(code, reason))
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        loop = asyncio.get_running_loop()
        self.watchdog = loop.call_later(self.limits.send_timeout, self.abort)

    def abort(self) -> None:
        """The client took nothing, not even the close frame, in time: drop the connection."""
        self.watchdog = None
        self.aborted = True
        self.out.clear()
        if self.abort_transport is not None:
            self.abort_transport()
        elif self.task is not None:
            self.task.cancel()

    def finish(self) -> None:
        self.closing = True
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.out.clear()

    def __repr__(self) -> str:
        return (
            f"Session(calls={len(self.calls)}, queued={self.queued}, "
            f"closing={self.closing}, why={self.why!r})"
        )


def _id(text: str) -> codec.MessageId | None:
    """The frame's id, for an error about a frame that is not otherwise read."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return codec.message_id(data) if type(data) is dict else None

"""One HTTP/1.1 client connection: an asyncio Protocol around httptools' response parser.

Rules of this file:
- One exchange at a time, no pipelining. `begin()` writes a request; the
  parser's callbacks fill in the response; `wait_response()` and `read()`
  return when the part the caller waits for is there.
- Nothing raw escapes: a socket error, a parser error, a deadline or a body
  over the limit becomes one `BackendError` in `error`, the transport is
  closed, and the waiting caller gets that error.
- Framing is httptools' (Content-Length, chunked), except read-until-close
  bodies, which httptools cannot end by itself: they end at EOF here.
- The deadline is one timer per exchange, armed in `begin()`; once the
  response is complete, nothing can time out.
- It knows nothing of pools: `reusable` tells the pool whether it may keep it.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from gateway.errors import (
    BackendBodyTooLarge,
    BackendClosed,
    BackendError,
    BackendProtocolError,
    BackendTimeout,
)

# A streamed body stops being read from the socket while this much of it
# waits for the caller, and resumes once the caller has taken it.
STREAM_HIGH_WATER = 262_144
# Bodies of these statuses are empty whatever the headers say (RFC 9112 §6.3).
_NO_BODY = frozenset({204, 304})


class _Abort(Exception):
    """Raised from a parser callback to stop parsing; `error` says why."""


class Connection(asyncio.Protocol):
    """A keep-alive connection to one origin, and the state of its current exchange."""

    __slots__ = (
        "active",
        "body_size",
        "buffered",
        "chunks",
        "closed",
        "complete",
        "error",
        "head_only",
        "headers",
        "headers_done",
        "idle_since",
        "keep_alive",
        "loop",
        "lost",
        "max_body",
        "origin",
        "parser",
        "paused",
        "received",
        "requests",
        "status",
        "streaming",
        "timer",
        "transport",
        "until_close",
        "waiter",
    )

    def __init__(self, origin: str, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self.requests = 0  # exchanges begun on this connection
        self.idle_since = 0.0
        self.active = False  # between begin() and finish()
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._reset(0, False, False)

    def _reset(self, max_body: int, streaming: bool, head_only: bool) -> None:
        self.max_body = max_body
        self.streaming = streaming
        self.head_only = head_only
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.body_size = 0
        self.buffered = 0
        self.paused = False
        self.headers_done = False
        self.complete = False
        self.until_close = False
        self.keep_alive = False
        self.received = False  # any byte of the response arrived
        self.error: BackendError | None = None

    # -- the pool's side ------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """True when the response was read in full and both ends keep the connection."""
        return self.complete and self.keep_alive and self.error is None and not self.closed

    def begin(
        self,
        head: bytes,
        body: bytes,
        deadline: float,
        max_body: int,
        *,
        streaming: bool = False,
        head_only: bool = False,
    ) -> None:
        """Write one request and arm the deadline; the response is awaited separately."""
        self._reset(max_body, streaming, head_only)
        self.requests += 1
        self.active = True
        if self.closed or self.transport is None:
            # Closed between checkout and now (EOF while handed over): nothing was sent.
            self.fail(BackendClosed(f"{self.origin} closed the connection before the request"))
            return
        self.timer = self.loop.call_at(deadline, self._expire)
        # One write, so a small request goes out in one segment.
        if len(body) < 65_536:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)

    def finish(self) -> None:
        """End the exchange: the pool keeps the connection or closes it."""
        self.active = False
        self.chunks = []
        if self.paused and self.transport is not None:
            # A stream can complete while reading is paused; idle, it must see EOF.
            self.paused = False
            self.transport.resume_reading()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def wait_response(self) -> None:
        """Until the headers (streaming) or the whole response arrived; raises its error."""
        while self.error is None and not (self.headers_done if self.streaming else self.complete):
            await self._wait()
        if self.error is not None:
            raise self.error

    async def read(self) -> bytes:
        """The next piece of a streamed body, b"" at its end; raises the exchange's error."""
        while True:
            if self.chunks:
                data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
                self.chunks = []
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()

    def take_body(self) -> bytes:
        chunks = self.chunks
        self.chunks = []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BackendError) -> None:
        """Record the exchange's first error, drop the connection, wake the caller."""
        if self.error is None and not self.complete:
            self.error = error
        self.close()
        self._wake()

    def _expire(self) -> None:
        self.timer = None
        if not self.complete:
            self.fail(BackendTimeout(f"no complete response from {self.origin} in time"))

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            # Bytes nobody asked for: the stream is out of step, never reuse it.
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # An _Abort from a callback has set `error` already; fail() keeps the first.
            reason = str(exc) or type(exc).__name__
            self.fail(BackendProtocolError(f"invalid HTTP from {self.origin}: {reason}"))

    def eof_received(self) -> bool | None:
        # Mark it now: connection_lost comes a loop iteration later, and an idle
        # connection must not be handed out in between. Returning None closes.
        self.closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete and self.error is None:
            if self.until_close and self.headers_done and exc is None:
                # An HTTP/1.0-style body: its end is the end of the connection.
                self._message_done()
            else:
                what = "reset" if exc is not None else "closed"
                self.fail(BackendClosed(f"{self.origin} {what} the connection mid-exchange"))
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    # -- httptools callbacks --------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        # A repeated header's values are joined, as Response documents.
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # 1xx: an interim response, dropped in on_message_complete
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        headers = self.headers
        length = headers.get("content-length")
        if self.head_only or status in _NO_BODY:
            pass
        elif length is not None:
            if int(length.partition(",")[0]) > self.max_body:
                self._too_large()
        elif "chunked" not in headers.get("transfer-encoding", "").lower():
            self.until_close = True
            self.keep_alive = False
        self.headers_done = True
        if self.head_only:
            # httptools does not know the request was HEAD and would wait for a
            # body; the response ends here and the connection is not reused.
            self.keep_alive = False
            self._message_done()
        elif self.streaming:
            self._wake()

    def on_body(self, body: bytes) -> None:
        size = self.body_size + len(body)
        if size > self.max_body:
            self._too_large()
        self.body_size = size
        self.chunks.append(body)
        if self.streaming:
            self.buffered += len(body)
            if self.buffered > STREAM_HIGH_WATER and not self.paused and self.transport:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            self.headers = {}  # the final response follows on the same connection
            return
        if not self.complete:
            self._message_done()

    def _message_done(self) -> None:
        self.complete = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wake()

    def _too_large(self) -> None:
        self.fail(BackendBodyTooLarge(f"response from {self.origin} over {self.max_body} bytes"))
        raise _Abort

    def __repr__(self) -> str:
        state = "closed" if self.closed else "active" if self.active else "idle"
        return f"Connection({self.origin!r}, {state}, requests={self.requests})"

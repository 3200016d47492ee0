"""A fake OpenAI-compatible chat completions server, real on loopback.

Rules of this file:
- It is an aiohttp server on 127.0.0.1 (a port the OS picks) speaking the
  wire format: `POST /v1/chat/completions` answered with one JSON body, or,
  when the request says `"stream": true`, with server-sent events
  (`Content-Type: text/event-stream`, chunked, `data: {json}` events with
  real pauses between them, ending with `data: [DONE]`).
- Every request is recorded (lower-case headers and the JSON body) before
  it is answered, so tests assert on what the bot sent.
- Replies are scripted per test: a queue of `Canned` replies taken in order,
  or a function from the request body to one.
- A stall waits until the client goes away or the server stops; `stop()`
  ends every stalled handler, so no test waits on a sleeping server.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

PATH = "/v1/chat/completions"


@dataclass
class Canned:
    """One scripted reply."""

    text: str = ""
    # A tool call to make, with its `reason` argument.
    tool: str | None = None
    reason: str = ""
    status: int = 200
    # Sent instead of a completion: the whole body (plain), or one event's data (stream).
    raw: bytes | None = None
    # Streamed text pieces; by default the text word by word.
    pieces: list[str] | None = None
    pause: float = 0.01  # between streamed events
    # Stall after this many events (0: before the status line); None: never.
    stall_after: int | None = None
    finish_reason: str = "stop"
    # Write each event in two halves, so events straddle chunks on the wire.
    split: bool = False
    # Answer a streaming request with one JSON body anyway.
    plain_anyway: bool = False


def text(value: str, **more: Any) -> Canned:
    return Canned(text=value, **more)


def tool_call(name: str, reason: str = "", said: str = "", **more: Any) -> Canned:
    return Canned(text=said, tool=name, reason=reason, **more)


@dataclass
class Seen:
    """One request as the server received it."""

    headers: dict[str, str]
    body: dict[str, Any]
    # The client's (host, port): the same for requests on one kept-alive connection.
    peer: tuple[str, int]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body["messages"])

    @property
    def last_user(self) -> str:
        return str(self.messages[-1]["content"])

    @property
    def system(self) -> str | None:
        first = self.messages[0]
        return str(first["content"]) if first["role"] == "system" else None


Script = Callable[[dict[str, Any]], Canned]


@dataclass
class FakeOpenAI:
    replies: deque[Canned] = field(default_factory=deque)
    script: Script | None = None
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def add(self, *canned: Canned) -> None:
        self.replies.extend(canned)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(PATH, self._handle)
        # handler_cancellation: a client that hangs up ends a stalled handler.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        # IPPROTO_TCP so asyncio sets TCP_NODELAY on the accepted sockets (see fake_ari).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return (
            f"FakeOpenAI(port={self.port}, queued={len(self.replies)}, seen={len(self.requests)})"
        )

    # -- answering ----------------------------------------------------------

    async def _stall(self) -> None:
        # Until the server stops (or the handler is cancelled by a hang-up).
        await self._closing.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Seen(headers, body, tuple(peer or ("", 0))))
        canned = self.script(body) if self.script is not None else self.replies.popleft()
        if canned.stall_after == 0:
            await self._stall()
        if canned.status != 200:
            error = {"error": {"message": "fake failure", "type": "server_error", "code": None}}
            return web.json_response(error, status=canned.status)
        if body.get("stream") and not canned.plain_anyway:
            return await self._stream(request, body, canned)
        if canned.raw is not None:
            return web.Response(body=canned.raw, content_type="application/json")
        return web.Response(
            body=orjson.dumps(completion(body, canned)), content_type="application/json"
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], canned: Canned
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b": fake-openai keep-alive\n\n")
        events = (
            [orjson.dumps(e) for e in stream_events(body, canned)]
            if canned.raw is None
            else [canned.raw]
        )
        for n, data in enumerate([*events, b"[DONE]"]):
            if canned.stall_after is not None and n == canned.stall_after:
                await self._stall()
                return response
            event = b"data: " + data + b"\n\n"
            if canned.split:
                half = len(event) // 2
                await response.write(event[:half])
                await asyncio.sleep(canned.pause)
                event = event[half:]
            await response.write(event)
            await asyncio.sleep(canned.pause)
        await response.write_eof()
        return response


def _tool_calls(canned: Canned) -> list[dict[str, Any]]:
    arguments = orjson.dumps({"reason": canned.reason} if canned.reason else {}).decode()
    return [
        {
            "id": "call_fake",
            "type": "function",
            "function": {"name": canned.tool, "arguments": arguments},
        }
    ]


def completion(request: dict[str, Any], canned: Canned) -> dict[str, Any]:
    """A plain chat completion response for `canned`."""
    message: dict[str, Any] = {"role": "assistant", "content": canned.text or None}
    if canned.tool:
        message["tool_calls"] = _tool_calls(canned)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if canned.tool else canned.finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def stream_events(request: dict[str, Any], canned: Canned) -> list[dict[str, Any]]:
    """The chunks of a streamed completion: role, text pieces, tool-call deltas, finish, usage."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": request.get("model"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [chunk({"role": "assistant", "content": ""})]
    pieces = (
        canned.pieces if canned.pieces is not None else [w for w in canned.text.split(" ") if w]
    )
    spaced = (
        pieces
        if canned.pieces is not None
        else [p if i == 0 else " " + p for i, p in enumerate(pieces)]
    )
    events += [chunk({"content": p}) for p in spaced]
    if canned.tool:
        call = _tool_calls(canned)[0]
        arguments = call["function"]["arguments"]
        head = {
            "index": 0,
            "id": call["id"],
            "type": "function",
            "function": {"name": canned.tool, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        # The arguments arrive in pieces of at most 5 characters.
        for i in range(0, len(arguments), 5):
            events.append(
                chunk(
                    {"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 5]}}]}
                )
            )
    events.append(chunk({}, "tool_calls" if canned.tool else canned.finish_reason))
    events.append(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"total_tokens": 2},
        }
    )
    return events


def serve(replies: Iterable[Canned] = (), script: Script | None = None) -> FakeOpenAI:
    """A fake server (not started yet) with a queue of replies or a script."""
    return FakeOpenAI(deque(replies), script)

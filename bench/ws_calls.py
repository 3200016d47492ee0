"""Scripted calls over websockets (front=websocket), for bench.callgen.

Calls are spread over a few sockets, at most `CALLS_PER_SOCKET` each, as a
media server multiplexes its calls (docs/websocket.md). Frames are built
once per script with the call-id placeholder (masked with the zero key, see
bench.ws_turn); an answer is matched to its call by its `call_id`.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

from bench.callgen import CONNECT_TIMEOUT, Leg, now
from bench.fronts import FALLBACK_MARK, PLACEHOLDER, webhook_event
from bench.rpc_turn import HOST
from bench.scripts import Script, Step
from bench.ws_turn import frame, handshake, split_frames

CALLS_PER_SOCKET = 64
_PLACE = PLACEHOLDER.decode()


def message(i: int, step: Step) -> dict[str, Any]:
    """The client message for a step: the webhook's event, as docs/websocket.md names it."""
    out: dict[str, Any] = webhook_event(i, step, "demo")
    del out["instance_id"]  # the socket's default instance
    out["id"] = out.pop("seq")
    out["call_id"] = _PLACE
    if out["type"] == "speech":
        out["type"] = "utterance"
    return out


class _Socket(asyncio.Protocol):
    """One websocket; turns in flight keyed by call id."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[str, asyncio.Future[tuple[float, str | None]]] = {}
        self.transport: asyncio.Transport | None = None
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                self.upgraded.set_exception(RuntimeError(bytes(buf[:end]).decode("latin-1")))
                return
            pos = end + 4
            self.upgraded.set_result(None)
        at = now()
        for payload in split_frames(buf, pos):
            answer = orjson.loads(payload)
            waiter = self.pending.pop(answer.get("call_id") or "", None)
            if waiter is None or waiter.done():
                continue
            kind = answer.get("type")
            error = None
            if kind == "error":
                error = str(answer.get("code"))
            elif kind == "action" and FALLBACK_MARK in payload:
                error = "fallback"
            waiter.set_result((at, error))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        at = now()
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_result((at, "connection-lost"))
        self.pending.clear()


class _WsLeg:
    __slots__ = ("call", "frames", "sock")
    due = None

    def __init__(self, sock: _Socket, frames: tuple[bytes, ...], call: str) -> None:
        self.sock, self.frames, self.call = sock, frames, call

    async def turn(self, i: int) -> tuple[float, str | None]:
        sock = self.sock
        waiter = asyncio.get_running_loop().create_future()
        if not sock.alive or sock.transport is None:
            return now(), "connection-lost"
        sock.pending[self.call] = waiter
        sock.transport.write(self.frames[i].replace(PLACEHOLDER, self.call.encode()))
        return await waiter

    def release(self) -> None:
        return None


class WsTransport:
    """`ceil(calls / CALLS_PER_SOCKET)` sockets; call n goes on socket n mod count."""

    def __init__(self, port: int, plays: tuple[Script, ...], calls: int) -> None:
        self.port = port
        self.frames = tuple(
            tuple(frame(message(i, s)) for i, s in enumerate(p.steps)) for p in plays
        )
        self.count = max(1, -(-calls // CALLS_PER_SOCKET))
        self.sockets: list[_Socket] = []
        self.next = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.count):
            sock = _Socket()
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda s=sock: s, HOST, self.port), CONNECT_TIMEOUT
            )
            transport.write(handshake(self.port))
            await asyncio.wait_for(sock.upgraded, CONNECT_TIMEOUT)
            self.sockets.append(sock)

    async def open(self, call: str, script: int) -> Leg:
        sock = self.sockets[self.next % len(self.sockets)]
        self.next += 1
        return _WsLeg(sock, self.frames[script], call)

    async def close(self) -> None:
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()
        self.sockets = []

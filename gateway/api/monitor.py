"""`/ws/monitor`: the live turn stream for dashboards.

Rules of this file:
- The upgrade needs an access key's signed query, read-only or full
  (`gateway.api.upgrade`); anything else is 401 before the upgrade. A
  bearer token is not enough: tokens drive calls, keys read the gateway.
- `?instance=a,b` keeps only those instances' turns; without it, all.
- Frames are JSON text: `{"type":"hello",...}` once, then one `turn` frame
  per turn (calls.monitor.TurnEvent), and `{"type":"dropped","count":N}`
  before the next batch when the reader fell more than the backlog behind.
- What the client sends is read and ignored (a `ping` text gets `pong`);
  a binary frame closes with 1003.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from gateway import errors
from gateway.api import upgrade
from gateway.api.auth import Authenticator
from gateway.asgi import Receive, Scope, Send, query_params, refuse_websocket
from gateway.calls.monitor import Monitor, Watcher

SUBPROTOCOL = "ivrgw.monitor.v1"


class MonitorRoute:
    def __init__(self, monitor: Monitor, auth: Authenticator | None) -> None:
        self.monitor = monitor
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        try:
            caller = upgrade.check(scope, self.auth)
        except errors.GatewayError as exc:
            await upgrade.refuse(send, exc)
            return
        wanted = query_params(scope).get("instance", "")
        instances = frozenset(i for i in wanted.split(",") if i) or None
        if await receive() != {"type": "websocket.connect"}:
            return
        offered = scope.get("subprotocols", ())
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": SUBPROTOCOL if SUBPROTOCOL in offered else None,
            }
        )
        watcher = self.monitor.watch(instances)
        hello = {
            "type": "hello",
            "instances": sorted(instances) if instances else None,
            "access_key": caller.key.id if caller.key else None,
        }
        writer = asyncio.create_task(self._write(send, watcher, orjson.dumps(hello)))
        try:
            await self._read(receive, send)
        finally:
            self.monitor.unwatch(watcher)
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer

    async def _read(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1003, "reason": "text only"})
                return
            if message.get("text", "").strip() in ("ping", '{"type":"ping"}'):
                await send({"type": "websocket.send", "text": '{"type":"pong"}'})

    @staticmethod
    async def _write(send: Send, watcher: Watcher, hello: bytes) -> None:
        await send({"type": "websocket.send", "text": hello.decode()})
        while True:
            events, dropped = await watcher.take()
            if dropped:
                note = orjson.dumps({"type": "dropped", "count": dropped}).decode()
                await send({"type": "websocket.send", "text": note})
            for event in events:
                await send({"type": "websocket.send", "text": event.frame().decode()})

    def __repr__(self) -> str:
        return f"MonitorRoute({self.monitor!r})"


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    body = orjson.dumps({"Code": "NotFound", "Message": f"No websocket at {scope['path']}."})
    await refuse_websocket(send, 404, b"application/json", body)

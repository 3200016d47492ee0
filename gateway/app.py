"""The gateway's ASGI application: a path table in front of the handlers.

Every choice is made here, once: which handler serves which path, the
authenticator, the metrics registry, the session store. Per request the
application does one dict lookup on the path. The idle-session sweeper runs
as a lifespan task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson

from gateway.api.auth import Authenticator
from gateway.api.rpc import RpcApi
from gateway.asgi import ASGIApp, Receive, Scope, Send, respond
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.services.local import LocalDialogueService
from gateway.settings import Settings
from gateway.store.instances import Instance, InstanceRegistry
from gateway.store.sessions import SessionStore

log = logging.getLogger("gateway.app")


class Gateway:
    """The ASGI callable uvicorn serves."""

    def __init__(self, settings: Settings, instances: list[Instance]) -> None:
        self.settings = settings
        self.instances = InstanceRegistry(instances)
        self.sessions = SessionStore(settings.idle_timeout)
        self.metrics = Metrics(self._live_conversations)
        self.service = LocalDialogueService(self.instances, self.sessions)
        self.authenticator = (
            Authenticator(
                {k.id: k for k in settings.access_keys},
                settings.timestamp_window,
                settings.max_nonces,
            )
            if settings.auth_enabled
            else None
        )
        self.rpc = RpcApi(
            self.service.run,
            self.authenticator,
            self.metrics,
            max_body=settings.max_body_bytes,
            service_sync=self.service.run_sync,
        )
        self.ready = False
        self.routes: dict[str, ASGIApp] = {
            "/": self.rpc,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        self._sweeper: asyncio.Task[None] | None = None

    def _live_conversations(self) -> list[tuple[str, int]]:
        """Every configured instance (0 when idle) and any other with live calls."""
        counts = {i.instance_id: 0 for i in self.instances}
        counts.update(self.sessions.counts())
        return sorted(counts.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self.routes.get(scope["path"])
            if handler is None:
                body = orjson.dumps(
                    {"Code": "NotFound", "Message": f"No route for {scope['path']}."}
                )
                await respond(send, 404, b"application/json", body)
                return
            await handler(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # Websocket routes arrive with their adapters; until then none is served.

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"application/json", b'{"status":"alive"}')

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ready:
            body = orjson.dumps({"status": "ready", "instances": len(self.instances)})
            await respond(send, 200, b"application/json", body)
        else:
            await respond(send, 503, b"application/json", b'{"status":"starting"}')

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, CONTENT_TYPE.encode(), self.metrics.exposition())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            expired = self.service.expire()
            if expired:
                log.info("expired idle conversations", extra={"fields": {"count": expired}})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._sweeper = asyncio.create_task(self._sweep())
                self.ready = True
                log.info(
                    "gateway ready",
                    extra={
                        "fields": {
                            "instances": [i.instance_id for i in self.instances],
                            "auth": self.authenticator is not None,
                        }
                    },
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                if self._sweeper is not None:
                    self._sweeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._sweeper
                await send({"type": "lifespan.shutdown.complete"})
                return

    def __repr__(self) -> str:
        return f"Gateway({self.settings!r}, {self.instances!r}, {self.sessions!r})"

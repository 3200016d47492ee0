"""The gateway's ASGI application: a path table in front of the handlers.

Every choice is made here, once: which handler serves which path, the
authenticator, the metrics registry, the session store. Per request the
application does one dict lookup on the path. The idle-session sweeper runs
as a lifespan task.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import orjson

from gateway.api.auth import Authenticator
from gateway.api.manage import ManagementApi
from gateway.api.monitor import MonitorRoute, not_found
from gateway.api.rpc import RpcApi
from gateway.asgi import ASGIApp, Receive, Scope, Send, respond
from gateway.bots.llm import LlmBot
from gateway.bots.webhook import WebhookBot, WebhookConfig
from gateway.calls.bridge import Bridge
from gateway.calls.idempotency import TurnCache
from gateway.calls.monitor import Monitor
from gateway.calls.mount import AdapterContext, LiveCall, resolve
from gateway.dialogue.bot import AsyncBot
from gateway.dialogue.config import ConfigProblem
from gateway.errors import ConfigError
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.net.breaker import Breaker, BreakerCollector
from gateway.net.pool import Pool, PoolCollector
from gateway.services.local import LocalDialogueService, RemoteService
from gateway.services.remote import RemoteDialogueService
from gateway.settings import Settings
from gateway.store.instances import Instance, InstanceRegistry
from gateway.store.outbox import Outbox, OutboxCollector
from gateway.store.sessions import SessionStore

log = logging.getLogger("gateway.app")


class Gateway:
    """The ASGI callable uvicorn serves."""

    def __init__(self, settings: Settings, instances: list[Instance]) -> None:
        self.settings = settings
        self.sessions = SessionStore(settings.idle_timeout)
        self.metrics = Metrics(self._live_conversations)

        # Backends: one pooled HTTP client, the configured bots and remote
        # navigators, a breaker for each, and the outbox when a remote exists.
        p = settings.pool
        self.pool = Pool(
            max_connections=p.max_connections,
            acquire_timeout=p.acquire_timeout,
            connect_timeout=p.connect_timeout,
            idle_timeout=p.idle_timeout,
            max_body=p.max_body_bytes,
        )
        self.bots: dict[str, AsyncBot] = {}
        for cfg in settings.bots:
            self.bots[cfg.name] = (
                WebhookBot(cfg, self.pool)
                if isinstance(cfg, WebhookConfig)
                else LlmBot(cfg, self.pool)
            )
        b = settings.breaker
        self.breakers = {name: Breaker(name, b.failures, b.reset_seconds) for name in self.bots}
        o = settings.outbox
        self.outbox = (
            Outbox(o.path, retry_base=o.retry_base, retry_max=o.retry_max, max_age=o.max_age)
            if settings.remotes
            else None
        )
        self.remotes: dict[str, RemoteService] = {}
        remote_breakers: list[Breaker] = []
        for rc in settings.remotes:
            breaker = Breaker(f"remote:{rc.name}", b.failures, b.reset_seconds)
            remote_breakers.append(breaker)
            self.remotes[rc.name] = RemoteDialogueService(rc, self.pool, self.outbox, breaker)
        self.instances = InstanceRegistry(
            dataclasses.replace(i, async_bot=self.bots[i.chatbot]) if i.chatbot else i
            for i in instances
        )
        self.service = LocalDialogueService(
            self.instances, self.sessions, breakers=self.breakers, remotes=self.remotes
        )
        registry = self.metrics.registry
        registry.register(PoolCollector({"backends": self.pool}))
        registry.register(
            BreakerCollector(lambda: iter([*self.breakers.values(), *remote_breakers]))
        )
        if self.outbox is not None:
            registry.register(OutboxCollector(self.outbox))
        self.management = ManagementApi(self.instances, self.bots)
        # One turn cache for every front door; the bridge namespaces its keys by front.
        self.turns = TurnCache(settings.idempotent_turns)
        self.monitor = Monitor()
        self.bridge = Bridge(
            self.service.run_sync, self.instances, self.metrics, self.turns, self.monitor
        )
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
            turns=self.turns,
            management=self.management.actions,
            monitor=self.monitor,
        )
        self.ready = False
        self.routes: dict[str, ASGIApp] = {
            "/": self.rpc,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        self.websockets: dict[str, ASGIApp] = {
            "/ws/monitor": MonitorRoute(self.monitor, self.authenticator)
        }
        self._sweeper: asyncio.Task[None] | None = None
        self.prefixes: list[tuple[str, ASGIApp]] = []
        self.live: dict[str, LiveCall] = {}
        self.startups: list[Callable[[], Awaitable[None]]] = []
        self.shutdowns: list[Callable[[], Awaitable[None]]] = []
        self.checks: dict[str, Callable[[], bool]] = {}
        self._mount_adapters()

    def _mount_adapters(self) -> None:
        """The adapters settings enable, resolved by name (gateway.calls.mount)."""
        context = AdapterContext(
            self.bridge,
            self.instances,
            self.metrics,
            self.settings.path.parent,
            self.pool,
            self.live,
            self.authenticator,
            self.monitor,
        )
        for name, table in self.settings.adapters:
            where = f"adapters.{name}"
            try:
                mounted = resolve(name)(context, table, where)
            except ConfigProblem as exc:
                raise ConfigError(str(self.settings.path), exc.key, exc.problem) from None
            for path, handler in mounted.paths.items():
                if path in self.routes:
                    raise ConfigError(str(self.settings.path), f"{where}.path", f"{path} is taken")
                self.routes[path] = handler
            for path, handler in mounted.websockets.items():
                if path in self.websockets:
                    raise ConfigError(str(self.settings.path), f"{where}.path", f"{path} is taken")
                self.websockets[path] = handler
            self.prefixes.extend(mounted.prefixes.items())
            self.startups.extend(mounted.startup)
            self.shutdowns.extend(mounted.shutdown)
            self.checks.update(mounted.ready)

    def _live_conversations(self) -> list[tuple[str, int]]:
        """Every configured instance (0 when idle) and any other with live calls."""
        counts = {i.instance_id: 0 for i in self.instances}
        counts.update(self.sessions.counts())
        return sorted(counts.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            handler = self.routes.get(path)
            if handler is None:
                handler = next((h for p, h in self.prefixes if path.startswith(p)), None)
            if handler is None:
                body = orjson.dumps(
                    {"Code": "NotFound", "Message": f"No route for {scope['path']}."}
                )
                await respond(send, 404, b"application/json", body)
                return
            await handler(scope, receive, send)
        elif kind == "websocket":
            await self.websockets.get(scope["path"], not_found)(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"application/json", b'{"status":"alive"}')

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.ready:
            await respond(send, 503, b"application/json", b'{"status":"starting"}')
            return
        # An adapter whose switch is unreachable makes the gateway not ready,
        # though its other front doors keep serving.
        adapters = {name: check() for name, check in self.checks.items()}
        ok = all(adapters.values())
        body = orjson.dumps(
            {
                "status": "ready" if ok else "degraded",
                "instances": len(self.instances),
                "adapters": adapters,
            }
        )
        await respond(send, 200 if ok else 503, b"application/json", body)

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
                if self.outbox is not None:
                    await self.outbox.start()
                for start in self.startups:
                    await start()
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
                for stop in self.shutdowns:
                    with contextlib.suppress(Exception):
                        await stop()
                if self.outbox is not None:
                    await self.outbox.close()
                await self.pool.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def __repr__(self) -> str:
        return f"Gateway({self.settings!r}, {self.instances!r}, {self.sessions!r})"

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
import sqlite3
from collections.abc import Awaitable, Callable

import orjson

from gateway.api.auth import Authenticator
from gateway.api.links import PREFIX as LINKS_PREFIX
from gateway.api.links import Links
from gateway.api.manage import Context as ManageContext
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
from gateway.store.db import StoreError
from gateway.store.instances import Instance, InstanceRegistry, parse_instance
from gateway.store.outbox import Outbox, OutboxCollector
from gateway.store.recorder import Recorder
from gateway.store.sessions import SessionStore
from gateway.store.store import Store
from gateway.store.writer import StoreCollector

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
        # The database, when on, is the source of truth for instances: the
        # files are copied in on its first start only (gateway.store.catalog).
        self.store = Store(settings.store) if settings.store.enabled else None
        if self.store is not None:
            instances = self._stored_instances(self.store, instances)
        self.instances = InstanceRegistry(
            dataclasses.replace(i, async_bot=self.bots[i.chatbot]) if i.chatbot else i
            for i in instances
        )
        store_settings = settings.store
        self.links = Links(
            self.store.link_key if self.store is not None else b"",
            store_settings.link_ttl,
            {
                "exports": store_settings.exports_dir,
                "auditions": store_settings.exports_dir / "auditions",
            },
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
        if self.store is not None:
            registry.register(StoreCollector(self.store.writer))
        self.management = ManagementApi(
            ManageContext(self.instances, self.bots, self.store, self.links, settings)
        )
        # One turn cache for every front door; the bridge namespaces its keys by front.
        self.turns = TurnCache(settings.idempotent_turns)
        self.monitor = Monitor()
        self.recorder = (
            Recorder(self.store.record, settings.idle_timeout) if self.store is not None else None
        )
        self.bridge = Bridge(
            self.service.run_sync,
            self.instances,
            self.metrics,
            self.turns,
            self.monitor,
            self.recorder,
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
            public_url=settings.public_url,
            recorder=self.recorder,
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
        if self.store is not None:
            self.prefixes.append((LINKS_PREFIX, self.links))
        self.live: dict[str, LiveCall] = {}
        self.startups: list[Callable[[], Awaitable[None]]] = []
        self.shutdowns: list[Callable[[], Awaitable[None]]] = []
        self.checks: dict[str, Callable[[], bool]] = {}
        self._mount_adapters()

    def _stored_instances(self, store: Store, files: list[Instance]) -> list[Instance]:
        """The instances in the database (seeded from `files` on its first start).

        A stored instance is checked as a file is: a bot or remote it names
        must be configured, or start-up fails naming the database and the key.
        """
        where = str(store.path)
        try:
            stored = store.open(i.document for i in files)
        except (StoreError, sqlite3.Error) as exc:
            raise ConfigError(str(self.settings.path), "store.path", f"{where}: {exc}") from None
        instances: list[Instance] = []
        remotes = {r.name for r in self.settings.remotes}
        for row in stored:
            key = f"instances[{row.instance_id}]"
            try:
                instance = parse_instance(row.document)
            except ConfigProblem as exc:
                raise ConfigError(where, f"{key}.{exc.key}", exc.problem) from None
            if instance.chatbot and instance.chatbot not in self.bots:
                problem = f"no [[bots]] entry named {instance.chatbot!r} in {self.settings.path}"
                raise ConfigError(where, f"{key}.Chatbot", problem)
            if instance.remote and instance.remote not in remotes:
                problem = f"no [[remotes]] entry named {instance.remote!r} in {self.settings.path}"
                raise ConfigError(where, f"{key}.remote.name", problem)
            instances.append(instance)
        log.info(
            "instances loaded from the store",
            extra={"fields": {"path": where, "seeded": store.seeded, "count": len(instances)}},
        )
        return instances

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
            self.recorder,
            self.links,
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
            if self.recorder is not None:
                # Conversations with no turn for idle_timeout end in the records too.
                expired = max(expired, self.recorder.expire())
            if expired:
                log.info("expired idle conversations", extra={"fields": {"count": expired}})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.store is not None:
                    await self.store.start()
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
                # After the adapters: the records of calls they ended are flushed too.
                if self.store is not None:
                    await self.store.aclose()
                await self.pool.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def __repr__(self) -> str:
        return f"Gateway({self.settings!r}, {self.instances!r}, {self.sessions!r})"

"""One ARI connection: the events websocket (kept up) and REST calls (through the pool).

Rules of this file:
- The events websocket uses the websockets library, subprotocol `ari`, HTTP
  Basic auth. When it drops or cannot connect, it reconnects with capped
  exponential backoff and full jitter (0.5 s doubling to 30 s), forever,
  until `close`; calls in Stasis carry on across a reconnect.
- After each (re)connect, `on_connect` runs before any event is read, so the
  adapter can reconcile calls with what Asterisk says now.
- REST goes through the gateway's pooled client, with a deadline. A status
  of 400 or more raises `AriStatus` (the adapter treats 404 and 409 as "the
  call is gone"); transport failures raise the pool's `BackendError`.
- `download` streams a file resource (a stored recording) to disk in
  chunks, under a temporary name renamed into place once whole, so memory
  stays flat and a partial file never appears.
- Counters (reconnects, REST errors by status) are read by the collector.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

import websockets
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from websockets.asyncio.client import connect

from adapters.asterisk import codec
from gateway import errors
from gateway.net.http import HttpClient, Response

log = logging.getLogger("adapters.asterisk")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
REST_TIMEOUT = 5.0


class AriStatus(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"ARI answered {status}: {message}")
        self.status = status
        self.message = message

    @property
    def call_gone(self) -> bool:
        """404 (no such channel or playback) or 409 (not in Stasis)."""
        return self.status in (404, 409)


class AriClient:
    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        app: str,
        http: HttpClient,
        on_event: Callable[[codec.Event], None],
        on_connect: Callable[[], Awaitable[None]],
        name: str = "asterisk",
    ) -> None:
        parts = urlsplit(url)
        self.name = name
        self.base = url.rstrip("/") + "/ari"
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self.events_url = (
            f"{ws_scheme}://{parts.netloc}{parts.path.rstrip('/')}/ari/events"
            f"?app={quote(app)}&subscribeAll=false"
        )
        self.app = app
        self.http = http
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.on_event = on_event
        self.on_connect = on_connect
        self.connected = False
        self.reconnects = 0
        self.rest_errors: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- REST -------------------------------------------------------------------

    async def rest(
        self, method: str, path: str, query: Mapping[str, str] | None = None
    ) -> Response:
        url = self.base + path
        if query:
            url += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        try:
            response = await self.http.request(
                method, url, headers=(("authorization", self._auth),), timeout=REST_TIMEOUT
            )
        except errors.BackendError as exc:
            self.rest_errors[exc.kind] = self.rest_errors.get(exc.kind, 0) + 1
            raise
        if response.status >= 400:
            status = str(response.status)
            self.rest_errors[status] = self.rest_errors.get(status, 0) + 1
            raise AriStatus(response.status, response.body[:200].decode("utf-8", "replace"))
        return response

    async def download(self, path: str, target: Path, max_body: int, timeout: float) -> int:
        """GET `path` (relative to /ari) into the file `target`; the bytes written.

        Raises AriStatus for a status of 400 or more, the pool's BackendError
        for a transport failure or a body over `max_body`, OSError for the disk.
        """
        partial = target.with_name(f".{target.name}.part")
        try:
            async with self.http.stream(
                "GET",
                self.base + path,
                headers=(("authorization", self._auth),),
                timeout=timeout,
                max_body=max_body,
            ) as response:
                if response.status >= 400:
                    body = b"".join([chunk async for chunk in response.chunks()])
                    status = str(response.status)
                    self.rest_errors[status] = self.rest_errors.get(status, 0) + 1
                    raise AriStatus(response.status, body[:200].decode("utf-8", "replace"))
                await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                handle = await asyncio.to_thread(partial.open, "wb")
                size = 0
                try:
                    async for chunk in response.chunks():
                        size += len(chunk)
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    await asyncio.to_thread(handle.close)
        except errors.BackendError as exc:
            self.rest_errors[exc.kind] = self.rest_errors.get(exc.kind, 0) + 1
            await asyncio.to_thread(_unlink, partial)
            raise
        except BaseException:
            await asyncio.to_thread(_unlink, partial)
            raise
        await asyncio.to_thread(os.replace, partial, target)
        return size

    # -- events -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ari-events-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected = False

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with connect(
                    self.events_url,
                    subprotocols=[websockets.Subprotocol("ari")],
                    additional_headers={"Authorization": self._auth},
                    open_timeout=5,
                    ping_interval=20,
                    compression=None,
                    proxy=None,
                    max_size=4 * 1_048_576,
                ) as ws:
                    self.connected = True
                    attempt = 0
                    log.info(
                        "ARI events connected",
                        extra={"fields": {"server": self.name, "app": self.app}},
                    )
                    await self.on_connect()
                    async for message in ws:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection refused, reset, handshake refused ...
                log.warning(
                    "ARI events connection lost",
                    extra={"fields": {"server": self.name, "error": type(exc).__name__}},
                )
            self.connected = False
            self.reconnects += 1
            delay = min(BACKOFF_CAP, BACKOFF_START * 2**attempt)
            attempt = min(attempt + 1, 16)
            await asyncio.sleep(random.uniform(0, delay))  # full jitter

    def _dispatch(self, message: str | bytes) -> None:
        try:
            event = codec.parse_event(message)
        except codec.AriWireError as exc:
            log.warning("ARI event refused", extra={"fields": {"error": str(exc)}})
            return
        if event is not None:
            self.on_event(event)

    def __repr__(self) -> str:
        return (
            f"AriClient({self.name}: {self.base!r}, app={self.app!r}, connected={self.connected})"
        )


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class AriCollector(Collector):
    def __init__(self, clients: Callable[[], Iterator[AriClient]]) -> None:
        self._clients = clients

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ivrgw_ari_connected",
            "ARI events websocket connected (1) or not.",
            labels=("server", "app"),
        )
        reconnects = CounterMetricFamily(
            "ivrgw_ari_reconnects",
            "ARI events websocket reconnect attempts.",
            labels=("server", "app"),
        )
        rest = CounterMetricFamily(
            "ivrgw_ari_rest_errors",
            "ARI REST calls that failed, by HTTP status or transport error kind.",
            labels=("server", "app", "status"),
        )
        for c in self._clients():
            up.add_metric([c.name, c.app], 1 if c.connected else 0)
            reconnects.add_metric([c.name, c.app], c.reconnects)
            for status, n in c.rest_errors.items():
                rest.add_metric([c.name, c.app, status], n)
        yield up
        yield reconnects
        yield rest

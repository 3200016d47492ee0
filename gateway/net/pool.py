"""The pooled HTTP/1.1 client: keep-alive connections per origin, over httptools.

Rules of this file:
- One pool per origin (scheme, host, port), named "scheme://host:port" in
  stats and metrics; a URL's userinfo never reaches an origin name (it
  becomes a Basic Authorization header, unless the caller sends one).
- At most `max_connections` per origin. A request first takes the most
  recently used idle connection that is neither closed nor idle longer than
  `idle_timeout`, else opens one, else waits up to `acquire_timeout` for one
  to be handed back (PoolTimeout). A connection handed back goes straight to
  the longest waiter.
- `timeout` is one deadline over acquire, connect, send and the whole response.
- One retry, on a fresh connection, only when a reused connection closed
  before any byte of the response arrived: the server closed it while idle
  as we sent (the keep-alive race). Never after response bytes, never for a
  fresh connection.
- Every failure leaves as a `BackendError` and is counted by its `kind`.
  Request bodies are sent with Content-Length; the caller may not frame them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import (
    BackendClosed,
    BackendConnectError,
    BackendError,
    BackendTimeout,
    PoolTimeout,
)
from gateway.net.connection import Connection
from gateway.net.http import Headers, Response

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers the pool writes itself; a caller who sends them would send them twice.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ROUTE_CACHE = 1024  # parsed URLs kept; cleared whole when full
_CLOSE_WAIT = 1.0  # how long aclose() waits for transports to finish closing


class PoolStats(NamedTuple):
    in_use: int  # connections checked out or being opened
    idle: int
    waits: int  # requests that had to wait for a free connection
    connects: int  # connections opened
    errors: Mapping[str, int]  # BackendError.kind -> requests failed


class _Origin:
    """The connections to one origin and their counters."""

    __slots__ = (
        "connects",
        "errors",
        "host",
        "idle",
        "in_use",
        "key",
        "port",
        "tls",
        "waiters",
        "waits",
    )

    def __init__(self, key: str, host: str, port: int, tls: bool) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.tls = tls
        self.idle: list[Connection] = []  # a stack: the most recently used last
        self.in_use = 0
        # Each waiter gets a connection, or None: "a slot is yours, connect".
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()
        self.waits = 0
        self.connects = 0
        self.errors: dict[str, int] = {}

    def count(self, error: BackendError) -> None:
        self.errors[error.kind] = self.errors.get(error.kind, 0) + 1

    def __repr__(self) -> str:
        return f"_Origin({self.key!r}, in_use={self.in_use}, idle={len(self.idle)})"


class _Route(NamedTuple):
    """What a URL resolves to, parsed once."""

    origin: _Origin
    target: str
    host_line: str
    auth_line: str


class Pool:
    """An `HttpClient` with a keep-alive pool per origin. Build it anywhere; it connects lazily."""

    def __init__(
        self,
        *,
        max_connections: int = 64,
        acquire_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        idle_timeout: float = 30.0,
        max_body: int = 1_048_576,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "ivr-gateway",
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_body = max_body
        self._ssl_context = ssl_context
        self._ua_line = f"User-Agent: {user_agent}\r\n"
        self._origins: dict[str, _Origin] = {}
        self._routes: dict[str, _Route] = {}
        self._bases: dict[str, _Route] = {}  # by scheme://authority
        self._closed = False

    # -- the HttpClient interface -----------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes = b"",
        timeout: float,
        max_body: int | None = None,
    ) -> Response:
        route = self._routes.get(url) or self._route(url)
        head = self._head(method, route, headers, body)
        deadline = asyncio.get_running_loop().time() + timeout
        limit = self._max_body if max_body is None else max_body
        origin = route.origin
        conn = await self._exchange(origin, head, body, deadline, limit, False, method == "HEAD")
        response = Response(conn.status, conn.headers, conn.take_body())
        self._release(origin, conn, reuse=True)
        return response

    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes = b"",
        timeout: float,
        max_body: int | None = None,
    ) -> StreamContext:
        route = self._routes.get(url) or self._route(url)
        head = self._head(method, route, headers, body)
        limit = self._max_body if max_body is None else max_body
        return StreamContext(self, route.origin, head, body, timeout, limit, method == "HEAD")

    async def aclose(self) -> None:
        """Close idle connections now, the others as they come back; fail waiters."""
        self._closed = True
        closing: list[asyncio.Future[None]] = []
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
                closing.append(conn.lost)
            origin.idle.clear()
            while origin.waiters:
                waiter = origin.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(BackendClosed("the HTTP client is closed"))
        if closing:
            await asyncio.wait(closing, timeout=_CLOSE_WAIT)

    def stats(self) -> dict[str, PoolStats]:
        return {
            key: PoolStats(
                o.in_use,
                sum(not c.closed for c in o.idle),
                o.waits,
                o.connects,
                dict(o.errors),
            )
            for key, o in self._origins.items()
        }

    # -- one exchange -------------------------------------------------------------

    async def _exchange(
        self,
        origin: _Origin,
        head: bytes,
        body: bytes,
        deadline: float,
        max_body: int,
        streaming: bool,
        head_only: bool,
    ) -> Connection:
        """A connection whose response headers (streaming) or whole response arrived."""
        try:
            conn = await self._acquire(origin, deadline)
        except BackendError as exc:
            origin.count(exc)
            raise
        try:
            conn.begin(head, body, deadline, max_body, streaming=streaming, head_only=head_only)
            try:
                await conn.wait_response()
            except BackendClosed:
                if conn.received or conn.requests == 1:
                    raise  # response bytes arrived, or a fresh connection failed: no retry
                # The keep-alive race. The slot passes to the fresh connection.
                conn.finish()
                conn = await self._connect(origin, deadline)
                conn.begin(head, body, deadline, max_body, streaming=streaming, head_only=head_only)
                await conn.wait_response()
        except BaseException as exc:
            self._release(origin, conn, reuse=False)
            if isinstance(exc, BackendError):
                origin.count(exc)
            raise
        return conn

    async def _acquire(self, origin: _Origin, deadline: float) -> Connection:
        """A connection with its slot: idle, new, or handed back while we waited."""
        if self._closed:
            raise BackendClosed("the HTTP client is closed")
        loop = asyncio.get_running_loop()
        idle = origin.idle
        now = loop.time()
        while idle:
            conn = idle.pop()
            # Stale: the server closed it while idle, or it idled too long to trust.
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                origin.in_use += 1
                return conn
            conn.close()
        if origin.in_use < self._max_connections:
            origin.in_use += 1
        else:
            handed = await self._wait(origin, deadline)
            if handed is not None:
                return handed
        # We hold a slot and open a connection in it; a failure gives the slot back.
        try:
            return await self._connect(origin, deadline)
        except BaseException:
            self._release(origin, None, reuse=False)
            raise

    async def _wait(self, origin: _Origin, deadline: float) -> Connection | None:
        loop = asyncio.get_running_loop()
        origin.waits += 1
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        origin.waiters.append(waiter)
        limit = min(deadline, loop.time() + self._acquire_timeout)
        timer = loop.call_at(limit, _expire_waiter, waiter, origin.key)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection or slot, then cancelled before taking it: pass it on.
                self._release(origin, waiter.result(), reuse=True)
            with contextlib.suppress(ValueError):
                origin.waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    async def _connect(self, origin: _Origin, deadline: float) -> Connection:
        """A new connection in a slot the caller holds; TLS when the origin is https."""
        loop = asyncio.get_running_loop()
        context = self._tls_context() if origin.tls else None
        connect_limit = loop.time() + self._connect_timeout
        bound_by_deadline = deadline <= connect_limit
        timeout = asyncio.timeout_at(min(deadline, connect_limit))
        try:
            async with timeout:
                _, conn = await loop.create_connection(
                    lambda: Connection(origin.key, loop),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError as exc:
            if not timeout.expired():
                # The kernel's own ETIMEDOUT, not our deadline.
                raise BackendConnectError(f"cannot connect to {origin.key}: {exc}") from None
            if bound_by_deadline:
                raise BackendTimeout(f"no connection to {origin.key} in time") from None
            raise BackendConnectError(f"no connection to {origin.key} in time") from None
        except ssl.SSLError as exc:
            # SSLCertVerificationError included; before OSError, of which it is one.
            raise BackendConnectError(f"TLS handshake with {origin.key} failed: {exc}") from None
        except OSError as exc:
            # DNS failure (gaierror), refused, unreachable.
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise BackendConnectError(f"cannot connect to {origin.key}: {reason}") from None
        origin.connects += 1
        return conn

    def _release(self, origin: _Origin, conn: Connection | None, *, reuse: bool) -> None:
        """Take back a connection (or just its slot); keep it only if it is clean."""
        if conn is not None:
            conn.finish()
            if reuse and conn.reusable and not self._closed:
                while origin.waiters:
                    waiter = origin.waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(conn)
                        return
                origin.in_use -= 1
                idle = origin.idle
                now = conn.loop.time()
                conn.idle_since = now
                idle.append(conn)
                # The least recently used sit at the bottom of the stack, where
                # acquire seldom looks: drop them here once closed or too old.
                while idle and (idle[0].closed or now - idle[0].idle_since >= self._idle_timeout):
                    idle.pop(0).close()
                return
            conn.close()
        # The slot goes to the longest waiter, who connects in it.
        while origin.waiters:
            waiter = origin.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        origin.in_use -= 1

    # -- requests and URLs --------------------------------------------------------

    def _head(self, method: str, route: _Route, headers: Headers, body: bytes) -> bytes:
        """The request line and headers. Raises ValueError on header injection."""
        names = {name.lower() for name, _ in headers} if headers else frozenset[str]()
        if names & _FRAMING:
            raise ValueError("the pool sets Content-Length itself; do not pass framing headers")
        lines = [f"{method} {route.target} HTTP/1.1\r\n"]
        if "host" not in names:
            lines.append(route.host_line)
        if "user-agent" not in names:
            lines.append(self._ua_line)
        if route.auth_line and "authorization" not in names:
            lines.append(route.auth_line)
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if body or method in _BODY_METHODS:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # Each piece ends in exactly one CRLF: any other CR or LF came from the caller.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise ValueError("CR or LF inside a request line or header")
        return text.encode("latin-1")

    def _route(self, url: str) -> _Route:
        # URLs that differ only after the authority (REST paths with ids in them)
        # share the parsed origin: only the target changes.
        start = url.find("://")
        slash = url.find("/", start + 3) if start > 0 else -1
        base_key = url[:slash] if slash > 0 and "#" not in url and "?" not in url[:slash] else ""
        if base_key:
            base = self._bases.get(base_key)
            if base is not None:
                return base._replace(target=url[slash:])
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in _DEFAULT_PORTS or not host:
            raise ValueError(f"not an http(s) URL with a host: {url!r}")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port or _DEFAULT_PORTS[scheme]
        shown = f"[{host}]" if ":" in host else host
        key = f"{scheme}://{shown}:{port}"
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(key, host, port, scheme == "https")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        auth = ""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
        route = _Route(origin, target, f"Host: {authority}\r\n", auth)
        if len(self._routes) >= _ROUTE_CACHE:
            self._routes.clear()
            self._bases.clear()
        self._routes[url] = route
        if base_key:
            self._bases[base_key] = route
        return route

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Built on first use: loading the system CAs costs milliseconds.
            self._ssl_context = ssl.create_default_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"origins={len(self._origins)}"
        return f"Pool({state}, max_connections={self._max_connections})"


def _expire_waiter(waiter: asyncio.Future[Connection | None], origin: str) -> None:
    if not waiter.done():
        waiter.set_exception(PoolTimeout(f"no free connection to {origin} in time"))


class StreamContext:
    """`async with pool.stream(...) as response`: the exchange runs on entry."""

    def __init__(
        self,
        pool: Pool,
        origin: _Origin,
        head: bytes,
        body: bytes,
        timeout: float,
        max_body: int,
        head_only: bool,
    ) -> None:
        self._args = (pool, origin, head, body, timeout, max_body, head_only)
        self._response: StreamingResponse | None = None

    async def __aenter__(self) -> StreamingResponse:
        pool, origin, head, body, timeout, max_body, head_only = self._args
        deadline = asyncio.get_running_loop().time() + timeout
        conn = await pool._exchange(origin, head, body, deadline, max_body, True, head_only)
        self._response = StreamingResponse(pool, origin, conn)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            await self._response.aclose()


class StreamingResponse:
    """A response whose body arrives through `chunks()`; see `HttpClient.stream`."""

    def __init__(self, pool: Pool, origin: _Origin, conn: Connection) -> None:
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._pool = pool
        self._origin = origin
        self._conn: Connection | None = conn

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while data := await conn.read():
                yield data
        except BackendError as exc:
            self._origin.count(exc)
            raise

    async def aclose(self) -> None:
        """Hand the connection back: kept if the body arrived in full, else closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(self._origin, conn, reuse=True)

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"StreamingResponse(status={self.status}, {state})"


class PoolCollector(Collector):
    """Prometheus series of named pools, read at scrape time."""

    def __init__(self, pools: Mapping[str, Pool]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "ivrgw_pool_connections",
            "Backend connections by state (in_use includes those being opened).",
            labels=("pool", "origin", "state"),
        )
        waits = CounterMetricFamily(
            "ivrgw_pool_waits",
            "Requests that had to wait for a free connection.",
            labels=("pool", "origin"),
        )
        connects = CounterMetricFamily(
            "ivrgw_pool_connects", "Backend connections opened.", labels=("pool", "origin")
        )
        errors = CounterMetricFamily(
            "ivrgw_pool_errors",
            "Backend requests failed, by kind.",
            labels=("pool", "origin", "kind"),
        )
        for name, pool in self._pools.items():
            for origin, s in pool.stats().items():
                connections.add_metric([name, origin, "in_use"], s.in_use)
                connections.add_metric([name, origin, "idle"], s.idle)
                waits.add_metric([name, origin], s.waits)
                connects.add_metric([name, origin], s.connects)
                for kind, n in s.errors.items():
                    errors.add_metric([name, origin, kind], n)
        yield connections
        yield waits
        yield connects
        yield errors

    def __repr__(self) -> str:
        return f"PoolCollector(pools={list(self._pools)})"

"""The pooled HTTP/1.1 client against real servers on 127.0.0.1.

Well-behaved servers: uvicorn (in a thread, plain and TLS with a trustme CA),
aiohttp's web server and nginx (bench/nginx.py). Misbehaving ones are raw
asyncio servers written here, each doing one wrong thing on purpose. Every
test runs twice, on a fresh uvloop and a fresh stock event loop; it stops every
server it started, and asserts behaviour, never speed: a deadline is only
checked as "raised within the timeout plus a second".
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import trustme
import uvicorn
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from bench.nginx import run_nginx
from gateway.errors import (
    BackendBodyTooLarge,
    BackendClosed,
    BackendConnectError,
    BackendProtocolError,
    BackendTimeout,
    PoolTimeout,
)
from gateway.net.connection import STREAM_HIGH_WATER
from gateway.net.pool import Pool, PoolCollector, PoolStats
from tests.conftest import free_port

T = TypeVar("T")
SLACK = 1.0  # how late a deadline may fire on a loaded machine


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}
_loop_factory = LOOPS["uvloop"]


@pytest.fixture(autouse=True, params=list(LOOPS))
def event_loop_kind(request: pytest.FixtureRequest) -> str:
    """Every test runs on uvloop (production) and on the stock loop."""
    global _loop_factory
    _loop_factory = LOOPS[request.param]
    return str(request.param)


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(coro)


def only(pool: Pool) -> PoolStats:
    """The stats of a pool's one origin."""
    (stats,) = pool.stats().values()
    return stats


# -- raw servers ----------------------------------------------------------------

Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback server running `handler` per connection; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.port = 0
        self.release = asyncio.Event()  # set by a test to end handlers that wait
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.release.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """(head, body) of the next request, None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests += 1
        return head, body


def response(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def answer_all(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A well-behaved keep-alive server: `ok` to every request."""
    while await server.read_request(reader) is not None:
        writer.write(response(b"ok"))


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- uvicorn ---------------------------------------------------------------------


async def asgi_app(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    """`/` echoes the request as JSON; `/chunks` streams three chunks without a length."""
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/chunks":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    echo = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "body": body.decode(),
    }
    payload = orjson.dumps(echo)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class UvicornThread:
    """uvicorn.Server on a free port in a thread of its own; stopped by should_exit."""

    def __init__(self, **kwargs: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            asgi_app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            **kwargs,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[UvicornThread]:
    with UvicornThread() as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UvicornThread, ssl.SSLContext]]:
    """uvicorn over TLS with a certificate for 127.0.0.1 from a CA made now, and a client context trusting it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with UvicornThread(ssl_keyfile=str(d / "key.pem"), ssl_certfile=str(d / "cert.pem")) as server:
        yield server, context


def test_pool_uvicorn_request_passes_method_headers_and_body(uvicorn_server: UvicornThread) -> None:
    async def main() -> None:
        pool = Pool()
        url = f"http://127.0.0.1:{uvicorn_server.port}/hook?a=1&b=%20"
        r = await pool.request(
            "POST",
            url,
            headers=[("X-Trace", "t-1"), ("Accept", "application/json")],
            body=b"hi",
            timeout=5,
        )
        assert r.status == 201
        assert r.headers["content-type"] == "application/json"
        echo = orjson.loads(r.body)
        assert (echo["method"], echo["path"], echo["query"], echo["body"]) == (
            "POST",
            "/hook",
            "a=1&b=%20",
            "hi",
        )
        sent = dict(echo["headers"])
        assert sent["host"] == f"127.0.0.1:{uvicorn_server.port}"
        assert sent["user-agent"] == "ivr-gateway"
        assert sent["x-trace"] == "t-1"
        assert sent["accept"] == "application/json"
        assert sent["content-length"] == "2"
        await pool.aclose()

    run(main())


def test_pool_uvicorn_keep_alive_reuses_one_connection(uvicorn_server: UvicornThread) -> None:
    async def main() -> None:
        pool = Pool(user_agent="test-agent/1")
        for _ in range(5):
            r = await pool.request("GET", f"http://127.0.0.1:{uvicorn_server.port}/", timeout=5)
            assert dict(orjson.loads(r.body)["headers"])["user-agent"] == "test-agent/1"
        assert only(pool) == PoolStats(in_use=0, idle=1, waits=0, connects=1, errors={})
        await pool.aclose()

    run(main())


def test_pool_uvicorn_chunked_response(uvicorn_server: UvicornThread) -> None:
    async def main() -> None:
        pool = Pool()
        url = f"http://127.0.0.1:{uvicorn_server.port}/chunks"
        r = await pool.request("GET", url, timeout=5)
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.body == b"one,two,three"
        async with pool.stream("GET", url, timeout=5) as s:
            assert s.status == 200
            assert b"".join([c async for c in s.chunks()]) == b"one,two,three"
        assert only(pool).connects == 1
        await pool.aclose()

    run(main())


def test_pool_localhost_name_resolves(uvicorn_server: UvicornThread) -> None:
    async def main() -> None:
        pool = Pool()
        r = await pool.request("GET", f"http://localhost:{uvicorn_server.port}/", timeout=5)
        assert r.status == 201
        assert list(pool.stats()) == [f"http://localhost:{uvicorn_server.port}"]
        await pool.aclose()

    run(main())


# -- HTTPS -------------------------------------------------------------------------


def test_pool_https_request_and_reuse(tls: tuple[UvicornThread, ssl.SSLContext]) -> None:
    server, context = tls

    async def main() -> None:
        pool = Pool(ssl_context=context)
        for host in ("127.0.0.1", "127.0.0.1", "127.0.0.1"):
            r = await pool.request(
                "POST", f"https://{host}:{server.port}/x", body=b"secret", timeout=5
            )
            assert r.status == 201
            assert orjson.loads(r.body)["body"] == "secret"
        assert only(pool).connects == 1
        assert list(pool.stats()) == [f"https://127.0.0.1:{server.port}"]
        await pool.aclose()

    run(main())


def test_pool_https_untrusted_certificate_is_connect_error(
    tls: tuple[UvicornThread, ssl.SSLContext],
) -> None:
    server, _ = tls

    async def main() -> None:
        pool = Pool()  # the system CAs, which never signed our test CA
        with pytest.raises(BackendConnectError, match="TLS"):
            await pool.request("GET", f"https://127.0.0.1:{server.port}/", timeout=5)
        assert only(pool).errors == {"connect": 1}
        await pool.aclose()

    run(main())


def test_pool_https_to_plain_server_is_connect_error(uvicorn_server: UvicornThread) -> None:
    async def main() -> None:
        pool = Pool()
        with pytest.raises(BackendConnectError):
            await pool.request("GET", f"https://127.0.0.1:{uvicorn_server.port}/", timeout=5)
        await pool.aclose()

    run(main())


# -- aiohttp's server ----------------------------------------------------------------


@asynccontextmanager
async def aiohttp_server() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"body": (await request.read()).decode(), "auth": request.headers.get("Authorization")}
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        out.enable_chunked_encoding()
        await out.prepare(request)
        for i in range(100):
            await out.write(b"%03d," % i)
        await out.write_eof()
        return out

    app = web.Application()
    app.router.add_route("*", "/", echo)
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_pool_aiohttp_concurrent_requests_share_the_connections() -> None:
    async def main() -> None:
        async with aiohttp_server() as base:
            pool = Pool(max_connections=2)
            bodies = [f"n{i}".encode() for i in range(50)]
            replies = await asyncio.gather(
                *(pool.request("PUT", base + "/", body=b, timeout=5) for b in bodies)
            )
            assert [orjson.loads(r.body)["body"].encode() for r in replies] == bodies
            stats = only(pool)
            assert stats.connects == 2
            assert stats.waits > 0
            assert (stats.in_use, stats.idle) == (0, 2)
            await pool.aclose()

    run(main())


def test_pool_aiohttp_chunked_stream_and_head() -> None:
    async def main() -> None:
        async with aiohttp_server() as base:
            pool = Pool()
            r = await pool.request("GET", base + "/stream", timeout=5)
            assert r.body == b"".join(b"%03d," % i for i in range(100))
            head = await pool.request("HEAD", base + "/", timeout=5)
            assert (head.status, head.body) == (200, b"")
            after = await pool.request("GET", base + "/", timeout=5)
            assert after.status == 200
            await pool.aclose()

    run(main())


def test_pool_url_credentials_become_basic_auth_and_stay_out_of_metrics() -> None:
    async def main() -> None:
        async with aiohttp_server() as base:
            pool = Pool()
            url = base.replace("http://", "http://bot%40corp:s3cret%21@") + "/"
            r = await pool.request("POST", url, body=b"{}", timeout=5)
            expected = "Basic " + base64.b64encode(b"bot@corp:s3cret!").decode()
            assert orjson.loads(r.body)["auth"] == expected
            assert list(pool.stats()) == [base.replace("localhost", "127.0.0.1")]
            registry = CollectorRegistry()
            registry.register(PoolCollector({"bot": pool}))
            text = generate_latest(registry).decode()
            assert "s3cret" not in text and "bot%40corp" not in text
            assert f'ivrgw_pool_connects_total{{origin="{base}",pool="bot"}} 1.0' in text
            assert f'ivrgw_pool_connections{{origin="{base}",pool="bot",state="idle"}} 1.0' in text
            await pool.aclose()

    run(main())


# -- nginx ---------------------------------------------------------------------------

NGINX_SERVER = """
        root {root};
        location = /ok {{ return 200 "ok\\n"; }}
"""


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    root.chmod(0o755)
    (root / "small.json").write_bytes(b'{"hello":"world"}')
    (root / "large.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return root


def test_pool_nginx_static_files_and_return(static_root: Path) -> None:
    async def main(url: Callable[[str], str]) -> None:
        pool = Pool(max_body=4 * 1024 * 1024)
        assert (
            await pool.request("GET", url("/small.json"), timeout=5)
        ).body == b'{"hello":"world"}'
        large = await pool.request("GET", url("/large.bin"), timeout=10)
        assert large.body == (static_root / "large.bin").read_bytes()
        ok = await pool.request("GET", url("/ok"), timeout=5)
        assert (ok.status, ok.body) == (200, b"ok\n")
        missing = await pool.request("GET", url("/missing"), timeout=5)
        assert missing.status == 404
        with pytest.raises(BackendBodyTooLarge):
            await pool.request("GET", url("/large.bin"), timeout=10, max_body=1024 * 1024)
        assert (await pool.request("GET", url("/ok"), timeout=5)).status == 200
        stats = only(pool)
        assert stats.connects == 2  # one more after the too-large body closed the first
        assert stats.errors == {"too_large": 1}
        await pool.aclose()

    with run_nginx(NGINX_SERVER.format(root=static_root)) as nginx:
        run(main(nginx.url))


def test_pool_nginx_closing_idle_connections_is_not_an_error(static_root: Path) -> None:
    async def main(url: str) -> None:
        pool = Pool()
        assert (await pool.request("GET", url, timeout=5)).status == 200
        await asyncio.sleep(1.5)  # past nginx's keepalive_timeout: it closes the idle connection
        assert (await pool.request("GET", url, timeout=5)).status == 200
        stats = only(pool)
        assert stats.connects == 2
        assert stats.errors == {}
        await pool.aclose()

    server = NGINX_SERVER.format(root=static_root)
    with run_nginx(server, http_body="    keepalive_timeout 500ms;") as nginx:
        run(main(nginx.url("/ok")))


# -- misbehaving servers ------------------------------------------------------------------


def test_pool_slow_server_times_out_at_the_deadline() -> None:
    async def late(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await asyncio.wait_for(server.release.wait(), 10)
        writer.write(response(b"late"))

    async def main() -> None:
        async with RawServer(late) as server:
            pool = Pool()
            started = time.monotonic()
            with pytest.raises(BackendTimeout) as caught:
                await pool.request("GET", server.url(), timeout=0.5)
            assert time.monotonic() - started < 0.5 + SLACK
            assert type(caught.value) is BackendTimeout
            assert only(pool).errors == {"timeout": 1}
            assert (only(pool).in_use, only(pool).idle) == (0, 0)
            await pool.aclose()

    run(main())


def test_pool_reset_mid_response_is_closed_without_retry() -> None:
    async def half(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(response(b"first"))
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    async def main() -> None:
        async with RawServer(half) as server:
            pool = Pool()
            assert (await pool.request("GET", server.url(), timeout=5)).body == b"first"
            # The second goes on the reused connection; bytes arrived, so no retry.
            with pytest.raises(BackendClosed):
                await pool.request("GET", server.url(), timeout=5)
            assert (server.connections, server.requests) == (1, 2)
            assert only(pool).errors == {"reset": 1}
            await pool.aclose()

    run(main())


def test_pool_stale_connection_closed_after_response_is_replaced() -> None:
    async def one_per_connection(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(response(b"ok"))  # keep-alive by default, then a silent close

    async def main() -> None:
        async with RawServer(one_per_connection) as server:
            pool = Pool()
            assert (await pool.request("GET", server.url(), timeout=5)).body == b"ok"
            await asyncio.sleep(0.1)  # the FIN arrives while the connection is idle
            assert (await pool.request("GET", server.url(), timeout=5)).body == b"ok"
            assert server.connections == 2
            assert only(pool).connects == 2
            assert only(pool).errors == {}
            await pool.aclose()

    run(main())


def test_pool_keep_alive_race_retries_once_on_a_fresh_connection() -> None:
    async def drops_second(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Answers the first request of a connection; closes on the second
        # without answering, as a server timing out the idle connection would.
        await server.read_request(reader)
        writer.write(response(b"ok"))
        await server.read_request(reader)

    async def main() -> None:
        async with RawServer(drops_second) as server:
            pool = Pool()
            assert (await pool.request("GET", server.url(), timeout=5)).body == b"ok"
            assert (await pool.request("POST", server.url(), body=b"x", timeout=5)).body == b"ok"
            assert (server.connections, server.requests) == (2, 3)
            assert only(pool).connects == 2
            assert only(pool).errors == {}
            await pool.aclose()

    run(main())


def test_pool_fresh_connection_closed_before_response_is_not_retried() -> None:
    async def hangs_up(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)

    async def main() -> None:
        async with RawServer(hangs_up) as server:
            pool = Pool()
            with pytest.raises(BackendClosed):
                await pool.request("GET", server.url(), timeout=5)
            assert server.connections == 1
            await pool.aclose()

    run(main())


def test_pool_reused_connection_failing_twice_raises_after_one_retry() -> None:
    async def main() -> None:
        calls = 0

        async def first_only_then_hangs_up(
            server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            nonlocal calls
            calls += 1
            await server.read_request(reader)
            if calls == 1:
                writer.write(response(b"ok"))
                await server.read_request(reader)

        async with RawServer(first_only_then_hangs_up) as server:
            pool = Pool()
            await pool.request("GET", server.url(), timeout=5)
            with pytest.raises(BackendClosed):
                await pool.request("GET", server.url(), timeout=5)
            assert server.connections == 2  # the original and exactly one retry
            await pool.aclose()

    run(main())


@pytest.mark.parametrize(
    ("wire", "body", "reused"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"hello",
            True,
            id="content-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
            b"hello world",
            True,
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            b"ok",
            False,
            id="connection-close",
        ),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", b"", True, id="no-content"),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"ok",
            True,
            id="interim-100",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nabc",
            b"abc",
            True,
            id="repeated-header",
        ),
    ],
)
def test_pool_response_framing(wire: bytes, body: bytes, reused: bool) -> None:
    async def fixed(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await server.read_request(reader) is not None:
            # In pieces, so a response is never parsed from one read.
            for i in range(0, len(wire), 7):
                writer.write(wire[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)

    async def main() -> None:
        async with RawServer(fixed) as server:
            pool = Pool()
            for _ in range(2):
                r = await pool.request("GET", server.url(), timeout=5)
                assert r.body == body
                if b"Set-Cookie" in wire:
                    assert r.headers["set-cookie"] == "a=1, b=2"
            assert server.connections == (1 if reused else 2)
            await pool.aclose()

    run(main())


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
def test_pool_body_until_close(version: bytes) -> None:
    payload = os.urandom(300_000)

    async def until_close(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(version + b" 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        for i in range(0, len(payload), 65536):
            writer.write(payload[i : i + 65536])
            await writer.drain()
        writer.close()

    async def main() -> None:
        async with RawServer(until_close) as server:
            pool = Pool()
            r = await pool.request("GET", server.url(), timeout=5)
            assert r.body == payload
            assert (only(pool).in_use, only(pool).idle) == (0, 0)
            await pool.aclose()

    run(main())


def test_pool_body_larger_than_one_read() -> None:
    payload = os.urandom(2 * 1024 * 1024 + 17)

    async def big(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await server.read_request(reader) is not None:
            writer.write(response(payload))
            await writer.drain()

    async def main() -> None:
        async with RawServer(big) as server:
            pool = Pool(max_body=len(payload))
            for _ in range(2):
                assert (await pool.request("GET", server.url(), timeout=10)).body == payload
            assert server.connections == 1
            await pool.aclose()

    run(main())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_pool_body_over_max_body_stops_and_closes(framing: str) -> None:
    size = 10 * 1024 * 1024
    piece = b"y" * 65536

    async def huge(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            chunk = piece
        for _ in range(size // len(piece)):
            writer.write(chunk)
            await writer.drain()

    async def main() -> None:
        async with RawServer(huge) as server:
            pool = Pool(max_body=1024 * 1024)
            with pytest.raises(BackendBodyTooLarge):
                await pool.request("GET", server.url(), timeout=10)
            stats = only(pool)
            assert (stats.in_use, stats.idle, stats.errors) == (0, 0, {"too_large": 1})
            await pool.aclose()

    run(main())


@pytest.mark.parametrize(
    "wire",
    [
        b"HELLO WORLD\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["not-http", "bad-length", "bad-chunk"],
)
def test_pool_invalid_http_is_protocol_error(wire: bytes) -> None:
    async def garbage(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(wire)
        await asyncio.wait_for(server.release.wait(), 10)

    async def main() -> None:
        async with RawServer(garbage) as server:
            pool = Pool()
            with pytest.raises(BackendProtocolError):
                await pool.request("GET", server.url(), timeout=5)
            assert only(pool).errors == {"protocol": 1}
            assert server.connections == 1
            await pool.aclose()

    run(main())


def test_pool_connection_refused_is_connect_error() -> None:
    async def main() -> None:
        pool = Pool()
        with pytest.raises(BackendConnectError):
            await pool.request("GET", f"http://127.0.0.1:{free_port()}/", timeout=5)
        assert only(pool).errors == {"connect": 1}
        assert only(pool).in_use == 0
        await pool.aclose()

    run(main())


def test_pool_dns_failure_is_connect_error() -> None:
    async def main() -> None:
        pool = Pool()
        with pytest.raises(BackendConnectError):
            await pool.request("GET", "http://no-such-host.invalid/", timeout=5)
        assert list(pool.stats()) == ["http://no-such-host.invalid:80"]
        await pool.aclose()

    run(main())


def test_pool_exhausted_raises_pool_timeout_and_counts_the_wait() -> None:
    async def slow(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await asyncio.wait_for(server.release.wait(), 10)
        writer.write(response(b"done"))

    async def main() -> None:
        async with RawServer(slow) as server:
            pool = Pool(max_connections=1, acquire_timeout=0.3)
            first = asyncio.create_task(pool.request("GET", server.url(), timeout=10))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                await pool.request("GET", server.url(), timeout=10)
            assert time.monotonic() - started < 0.3 + SLACK
            stats = only(pool)
            assert (stats.in_use, stats.waits, stats.errors) == (1, 1, {"pool_timeout": 1})
            server.release.set()
            assert (await first).body == b"done"
            # The slot is free again: the next request goes through without waiting.
            assert (await pool.request("GET", server.url(), timeout=5)).status == 200
            assert only(pool).waits == 1
            await pool.aclose()

    run(main())


def test_pool_waiter_gets_the_connection_handed_back() -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server:
            pool = Pool(max_connections=1, acquire_timeout=5)
            replies = await asyncio.gather(
                *(pool.request("GET", server.url(), timeout=5) for _ in range(10))
            )
            assert all(r.body == b"ok" for r in replies)
            assert (only(pool).connects, only(pool).waits, server.connections) == (1, 9, 1)
            await pool.aclose()

    run(main())


def test_pool_idle_timeout_discards_old_connections() -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server:
            pool = Pool(idle_timeout=0.2)
            await pool.request("GET", server.url(), timeout=5)
            await asyncio.sleep(0.3)
            await pool.request("GET", server.url(), timeout=5)
            assert (server.connections, only(pool).connects, only(pool).idle) == (2, 2, 1)
            await pool.aclose()

    run(main())


def test_pool_stream_yields_chunks_as_they_arrive() -> None:
    async def main() -> None:
        got_first = asyncio.Event()

        async def paced(
            server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            # The rest only once the client has seen the first chunk: a client
            # that waited for the whole body would time out here.
            await asyncio.wait_for(got_first.wait(), 5)
            for word in (b"second", b"third"):
                await asyncio.sleep(0.05)
                writer.write(b"%x\r\n%s\r\n" % (len(word), word))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

        async with RawServer(paced) as server:
            pool = Pool()
            pieces = []
            async with pool.stream("GET", server.url(), timeout=5) as s:
                assert s.status == 200
                async for piece in s.chunks():
                    pieces.append(piece)
                    got_first.set()
            assert pieces == [b"first", b"second", b"third"]
            assert only(pool).idle == 1  # read to its end: kept
            await pool.aclose()

    run(main())


def test_pool_stream_left_early_closes_the_connection() -> None:
    async def endless(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(1000):
            writer.write(b"4\r\ndata\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main() -> None:
        async with RawServer(endless) as server:
            pool = Pool()
            async with pool.stream("GET", server.url(), timeout=5) as s:
                async for piece in s.chunks():
                    assert piece.startswith(b"data")
                    break
            assert (only(pool).in_use, only(pool).idle) == (0, 0)
            await pool.aclose()

    run(main())


def test_pool_stream_deadline_covers_the_body() -> None:
    async def stalls(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.wait_for(server.release.wait(), 10)

    async def main() -> None:
        async with RawServer(stalls) as server:
            pool = Pool()
            async with pool.stream("GET", server.url(), timeout=0.5) as s:
                chunks = s.chunks()
                assert await anext(chunks) == b"abc"
                with pytest.raises(BackendTimeout):
                    await anext(chunks)
            assert only(pool).errors == {"timeout": 1}
            await pool.aclose()

    run(main())


def test_pool_rejects_header_injection_and_framing_headers() -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server:
            pool = Pool()
            with pytest.raises(ValueError):
                await pool.request("GET", server.url(), headers=[("X-A", "1\r\nX-B: 2")], timeout=5)
            with pytest.raises(ValueError):
                await pool.request(
                    "GET", server.url(), headers=[("Content-Length", "5")], timeout=5
                )
            with pytest.raises(ValueError):
                await pool.request("GET", "ftp://127.0.0.1/", timeout=5)
            assert server.connections == 0
            await pool.aclose()

    run(main())


def test_pool_closed_pool_refuses_requests() -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server:
            pool = Pool()
            await pool.request("GET", server.url(), timeout=5)
            await pool.aclose()
            assert only(pool).idle == 0
            with pytest.raises(BackendClosed):
                await pool.request("GET", server.url(), timeout=5)

    run(main())


def test_pool_collector_series() -> None:
    async def main() -> None:
        async with RawServer(answer_all) as server:
            pool = Pool()
            await pool.request("GET", server.url(), timeout=5)
            with pytest.raises(BackendConnectError):
                await pool.request("GET", f"http://127.0.0.1:{free_port()}/", timeout=5)
            registry = CollectorRegistry()
            registry.register(PoolCollector({"webhook": pool}))
            text = generate_latest(registry).decode()
            origin = f"http://127.0.0.1:{server.port}"
            for line in (
                f'ivrgw_pool_connections{{origin="{origin}",pool="webhook",state="in_use"}} 0.0',
                f'ivrgw_pool_connections{{origin="{origin}",pool="webhook",state="idle"}} 1.0',
                f'ivrgw_pool_waits_total{{origin="{origin}",pool="webhook"}} 0.0',
                f'ivrgw_pool_connects_total{{origin="{origin}",pool="webhook"}} 1.0',
                'kind="connect",origin="http://127.0.0.1:',
            ):
                assert line in text
            await pool.aclose()

    run(main())


def test_pool_stream_backpressure_then_reuse() -> None:
    # Just over the read-pause threshold, so the body can complete while
    # reading is paused; the connection must still work when it is reused.
    payload = os.urandom(STREAM_HIGH_WATER + 1000)

    async def main() -> None:
        async def send(
            server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await server.read_request(reader) is not None:
                writer.write(response(payload))

        async with RawServer(send) as server:
            pool = Pool()
            async with pool.stream("GET", server.url(), timeout=5) as s:
                await asyncio.sleep(0.2)  # the body arrives and waits, unread
            for _ in range(2):
                async with pool.stream("GET", server.url(), timeout=5) as s:
                    assert b"".join([c async for c in s.chunks()]) == payload
            assert (await pool.request("GET", server.url(), timeout=2)).body == payload
            await pool.aclose()

    run(main())


def test_pool_routes_share_a_parsed_origin_across_paths() -> None:
    pool = Pool()
    a = pool._route("http://u:p@127.0.0.1:8088/ari/channels/1.2/play?media=sound%3Ax")
    b = pool._route("http://u:p@127.0.0.1:8088/ari/playbacks/pb-9")
    c = pool._route("http://127.0.0.1:8088/ari/playbacks/pb-9")
    assert a.origin is b.origin is c.origin
    assert a.target == "/ari/channels/1.2/play?media=sound%3Ax"
    assert b.target == "/ari/playbacks/pb-9"
    assert b.host_line == "Host: 127.0.0.1:8088\r\n"
    # The credentials are part of what is shared: a URL without them sends none.
    assert a.auth_line == b.auth_line and a.auth_line.startswith("Authorization: Basic ")
    assert c.auth_line == ""
    frag = pool._route("http://127.0.0.1:8088/x#frag")
    assert frag.target == "/x"

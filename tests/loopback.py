"""A raw HTTP/1.1 server on 127.0.0.1 that misbehaves on purpose, for backend tests.

It runs its own asyncio loop in a thread inside the test process, so a test
can start it, point a gateway subprocess at it, read what it received, and
stop it. Each request is answered by `handler(request)`, which returns a
`Reply` saying exactly what to do on the wire: answer (content-length or
chunked, optionally after a delay, optionally closing after), reset the
connection mid-response, send a body of a given size, or send garbage.
Keep-alive is honoured unless the reply says otherwise.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> object:
        return orjson.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0
    chunked: bool = False
    close: bool = False  # close the connection silently after this response
    reset_after: int | None = None  # reset after writing this many response bytes
    raw: bytes | None = None  # send these bytes as the whole response
    body_size: int | None = None  # stream a body of this many bytes

    @classmethod
    def json(cls, value: object, status: int = 200, **kw: object) -> Reply:
        return cls(status, orjson.dumps(value), **kw)  # type: ignore[arg-type]


Handler = Callable[[Request], Reply]


@dataclass
class LoopbackServer:
    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            done.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Stop accepting and end every connection still open, on the server's loop."""
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._requests(reader, writer)
        except asyncio.CancelledError:
            pass  # the server is stopping: end quietly
        finally:
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, target, headers, body)
            self.requests.append(request)
            reply = self.handler(request)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if not await self._answer(writer, reply):
                return

    async def _answer(self, writer: asyncio.StreamWriter, r: Reply) -> bool:
        """Write one response; False when the connection must end."""
        if r.raw is not None:
            writer.write(r.raw)
            await writer.drain()
            return False
        head = f"HTTP/1.1 {r.status} X\r\ncontent-type: {r.content_type}\r\n"
        if r.body_size is not None:
            head += f"content-length: {r.body_size}\r\n\r\n"
            writer.write(head.encode())
            block = b"x" * 65_536
            left = r.body_size
            try:
                while left > 0:
                    writer.write(block[: min(left, len(block))])
                    left -= len(block)
                    await writer.drain()
            except ConnectionError:
                pass
            return False
        if r.chunked:
            head += "transfer-encoding: chunked\r\n\r\n"
            data = head.encode()
            for i in range(0, len(r.body), 7):
                piece = r.body[i : i + 7]
                data += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            data += b"0\r\n\r\n"
        else:
            head += f"content-length: {len(r.body)}\r\n\r\n"
            data = head.encode() + r.body
        if r.reset_after is not None:
            writer.write(data[: r.reset_after])
            await writer.drain()
            sock = writer.get_extra_info("socket")
            # SO_LINGER 0: close sends RST, not FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        writer.write(data)
        await writer.drain()
        return not r.close

    def __repr__(self) -> str:
        return f"LoopbackServer(port={self.port}, requests={len(self.requests)})"

"""A minimal bot for the benchmarks: answers every request with one fixed JSON body.

uvloop + httptools, keep-alive, nothing else, so that what is measured in
front of it (the gateway's webhook path, or nginx proxying) is not the bot.
Run as `python -m bench.bot_server PORT [BODY_FILE]`: with a file, it answers
with that file's bytes instead, which makes it the raw floor server (the
least any HTTP server on uvloop can do per request).
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

ANSWER = b'{"answer":"Your balance is 100 yuan.","expects_input":true}'


def response(body: bytes) -> bytes:
    """A keep-alive 200 carrying `body` as JSON."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    return head + str(len(body)).encode() + b"\r\n\r\n" + body


RESPONSE = response(ANSWER)


class _Bot(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Bot, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    global RESPONSE
    if len(sys.argv) > 2:
        with open(sys.argv[2], "rb") as f:
            RESPONSE = response(f.read())
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()

"""GET/HEAD /media/<name>: the prompt files, for the switch to fetch and play.

Rules of this file:
- A plain ASGI callable; the gateway routes every path under `prefix` here.
- A name is exactly `[0-9a-f]{64}.wav` (TtsService.lookup checks), so no
  path ever leaves the cache directory; anything else is 404.
- Files are content-addressed and never change: `Cache-Control: public,
  max-age=86400` and an `ETag` of the name, with 304 for a matching
  `If-None-Match`. No Range support: prompts are a few hundred KB at most.
- GET and HEAD only; other methods get 405 with `Allow`.
"""

from __future__ import annotations

import asyncio
import os

from gateway.asgi import Receive, Scope, Send, respond
from gateway.tts.service import TtsService

CACHE_CONTROL = b"public, max-age=86400"
CONTENT_TYPE = b"audio/wav"
PREFIX = "/media/"


class MediaRoute:
    """Serves `TtsService` prompt files under `prefix`."""

    def __init__(self, tts: TtsService, prefix: str = PREFIX) -> None:
        self.tts = tts
        self.prefix = prefix
        self.served = 0
        self.not_found = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            allow = [(b"allow", b"GET, HEAD")]
            await _answer(send, 405, b"text/plain", b"method not allowed\n", allow)
            return
        path: str = scope["path"]
        name = path[len(self.prefix) :] if path.startswith(self.prefix) else ""
        file = self.tts.lookup(name)
        if file is None:
            await self._not_found(send)
            return
        etag = f'"{name[:-4]}"'.encode()
        headers = [(b"cache-control", CACHE_CONTROL), (b"etag", etag)]
        match = _header(scope, b"if-none-match")
        if match is not None and (etag in match or match.strip() == b"*"):
            await _answer(send, 304, None, b"", headers)
            return
        try:
            # HEAD needs the size only; GET reads the file off the event loop.
            size = os.stat(file).st_size if method == "HEAD" else None
            body = b"" if method == "HEAD" else await asyncio.to_thread(file.read_bytes)
        except FileNotFoundError:
            # Removed from the cache directory under a running gateway.
            await self._not_found(send)
            return
        self.served += 1
        await _answer(send, 200, CONTENT_TYPE, body, headers, size)

    async def _not_found(self, send: Send) -> None:
        self.not_found += 1
        await respond(send, 404, b"text/plain", b"no such prompt\n")

    def __repr__(self) -> str:
        return f"MediaRoute({self.prefix!r}, served={self.served}, not_found={self.not_found})"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _answer(
    send: Send,
    status: int,
    content_type: bytes | None,
    body: bytes,
    extra: list[tuple[bytes, bytes]],
    length: int | None = None,
) -> None:
    """A response whose Content-Length is `length` (HEAD) or the body's."""
    headers = [] if content_type is None else [(b"content-type", content_type)]
    if status != 304:
        size = len(body) if length is None else length
        headers.append((b"content-length", str(size).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})

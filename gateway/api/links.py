"""Expiring signed links to files the gateway wrote: CSV exports and TTS auditions.

A link is `/files/<kind>/<name>?Expires=<unix seconds>&Signature=<sig>`, where
`sig` is HMAC-SHA256 over `"<path>\\n<expires>"` with the store's link key
(gateway.store.catalog.link_secret), URL-safe base64 without padding. The
handler answers GET and HEAD for a valid, unexpired link by streaming the
file in chunks; an expired link is 403 `LinkExpired`, a wrong signature 403
`SignatureDoesNotMatch`, a missing file 404. Only names made of safe
characters inside a registered directory are served: no path reaches
outside it.

Rules of this file:
- The link key never leaves the process: not in logs, not in metrics.
- `url` is pure (the clock is an argument of the object); `__call__` is the
  only place that touches the file system.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qs

import orjson

from gateway.asgi import Receive, Scope, Send, respond

PREFIX = "/files/"
CHUNK = 256 * 1024
MAX_SEGMENTS = 3
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_TYPES = {
    ".csv": b"text/csv; charset=utf-8",
    ".wav": b"audio/wav",
    ".mp3": b"audio/mpeg",
}


def _sign(key: bytes, path: str, expires: int) -> str:
    mac = hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"Code": code, "Message": message})
    await respond(send, status, b"application/json", body)


class Links:
    """Makes and serves the signed links of each registered kind of file."""

    def __init__(
        self,
        key: bytes,
        ttl: int,
        roots: Mapping[str, Path],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.ttl = ttl
        self.roots = dict(roots)
        self.clock = clock

    def add_root(self, kind: str, directory: Path) -> None:
        """Serve files under `directory` as `kind` (an adapter's recordings)."""
        if _NAME.fullmatch(kind) is None or kind in self.roots:
            raise ValueError(f"link kind {kind!r} is not a name or is taken")
        self.roots[kind] = directory

    def path_of(self, kind: str, name: str) -> Path:
        """Where a file of `kind` named `name` lives; ValueError for an unsafe name.

        A name is up to three `/`-separated segments, each starting with a
        letter or digit (so never `..`) of safe characters only.
        """
        parts = name.split("/")
        if (
            kind not in self.roots
            or len(parts) > MAX_SEGMENTS
            or not all(_NAME.fullmatch(part) for part in parts)
        ):
            raise ValueError(f"not a servable file: {kind}/{name}")
        return self.roots[kind].joinpath(*parts)

    def url(self, base: str, kind: str, name: str, ttl: int | None = None) -> str:
        """An absolute link (`base` is `http://host:port`) valid for `ttl` seconds."""
        self.path_of(kind, name)
        path = f"{PREFIX}{kind}/{name}"
        expires = int(self.clock()) + (self.ttl if ttl is None else ttl)
        return f"{base}{path}?Expires={expires}&Signature={_sign(self.key, path, expires)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _refuse(send, 405, "UnsupportedHTTPMethod", "Use GET or HEAD.")
            return
        path: str = scope["path"]
        kind, _, name = path[len(PREFIX) :].partition("/")
        try:
            file = self.path_of(kind, name)
        except ValueError:
            await _refuse(send, 404, "NotFound", "No such file.")
            return
        query = parse_qs(scope["query_string"].decode("latin-1"))
        expires_text = query.get("Expires", [""])[0]
        signature = query.get("Signature", [""])[0]
        if not expires_text.isdigit() or not signature:
            await _refuse(send, 403, "MissingSignature", "The link is not signed.")
            return
        expires = int(expires_text)
        if not hmac.compare_digest(_sign(self.key, path, expires), signature):
            await _refuse(send, 403, "SignatureDoesNotMatch", "The link's signature is wrong.")
            return
        if expires < self.clock():
            await _refuse(send, 403, "LinkExpired", "The link has expired; ask for a new one.")
            return
        try:
            handle = await asyncio.to_thread(file.open, "rb")
        except (FileNotFoundError, IsADirectoryError):
            await _refuse(send, 404, "NotFound", "The file no longer exists.")
            return
        try:
            size = os.fstat(handle.fileno()).st_size
            headers = [
                (b"content-type", _TYPES.get(file.suffix, b"application/octet-stream")),
                (b"content-length", str(size).encode()),
                (b"cache-control", b"private, no-store"),
            ]
            if file.suffix == ".csv":
                headers.append(
                    (b"content-disposition", f'attachment; filename="{file.name}"'.encode())
                )
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            # Chunks read in a thread: a large export never blocks the loop
            # or sits in memory whole.
            sent = 0
            while True:
                chunk = await asyncio.to_thread(handle.read, CHUNK)
                sent += len(chunk)
                last = not chunk or sent >= size
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    return
        finally:
            handle.close()

    def __repr__(self) -> str:
        return f"Links(kinds={sorted(self.roots)}, ttl={self.ttl})"

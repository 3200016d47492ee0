"""Signed expiring file links (gateway.api.links), served by a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from gateway.api.links import CHUNK, Links
from tests.conftest import free_port

KEY = bytes(range(32))
TTL = 60


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Served:
    """An ASGI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def request(self, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, target)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def get(self, url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        return self.request(method, f"{parts.path}?{parts.query}" if parts.query else parts.path)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    made = {"exports": tmp_path / "exports", "auditions": tmp_path / "exports" / "auditions"}
    for path in made.values():
        path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "secret.txt").write_text("not for you", encoding="utf-8")
    (made["exports"] / "report.csv").write_bytes("\ufeffa,b\n1,2\n".encode())
    (made["auditions"] / "hello.wav").write_bytes(b"RIFF0000WAVE")
    return made


@pytest.fixture
def links(roots: dict[str, Path], clock: Clock) -> Links:
    return Links(KEY, TTL, roots, clock=clock)


@pytest.fixture
def served(links: Links) -> Iterator[Served]:
    s = Served(links)
    yield s
    s.stop()


def base(s: Served) -> str:
    return f"http://127.0.0.1:{s.port}"


def test_a_valid_link_downloads_the_file(served: Served, links: Links) -> None:
    url = links.url(base(served), "exports", "report.csv")
    assert url.startswith(f"{base(served)}/files/exports/report.csv?Expires=")
    status, headers, body = served.get(url)
    assert status == 200 and body == "\ufeffa,b\n1,2\n".encode()
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"] == 'attachment; filename="report.csv"'
    assert headers["cache-control"] == "private, no-store"
    status, headers, body = served.get(links.url(base(served), "auditions", "hello.wav"))
    assert status == 200 and headers["content-type"] == "audio/wav" and body == b"RIFF0000WAVE"


def test_head_answers_the_headers_without_the_body(served: Served, links: Links) -> None:
    status, headers, body = served.get(links.url(base(served), "exports", "report.csv"), "HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == str(len("\ufeffa,b\n1,2\n".encode()))


def test_an_expired_link_is_refused(served: Served, links: Links, clock: Clock) -> None:
    url = links.url(base(served), "exports", "report.csv")
    clock.now += TTL - 1
    assert served.get(url)[0] == 200
    clock.now += 2
    status, _, body = served.get(url)
    assert status == 403 and b"LinkExpired" in body
    # A shorter ttl of its own.
    short = links.url(base(served), "exports", "report.csv", ttl=10)
    clock.now += 11
    assert served.get(short)[0] == 403


def test_a_tampered_link_is_refused(served: Served, links: Links, roots: dict[str, Path]) -> None:
    (roots["exports"] / "other.csv").write_text("other", encoding="utf-8")
    url = links.url(base(served), "exports", "report.csv")
    expires = url.split("Expires=")[1].split("&")[0]
    signature = url.split("Signature=")[1]
    for tampered in (
        url.replace(f"Expires={expires}", f"Expires={int(expires) + 3600}"),
        url.replace(signature, signature[::-1]),
        url.replace("report.csv", "other.csv"),
        url.replace("/files/exports/report.csv", "/files/auditions/report.csv"),
        # Signed with another key.
        Links(b"another key", TTL, roots).url(base(served), "exports", "report.csv"),
    ):
        status, _, body = served.get(tampered)
        assert status == 403 and b"SignatureDoesNotMatch" in body, tampered
    status, _, body = served.get(url.split("?")[0])
    assert status == 403 and b"MissingSignature" in body
    status, _, _ = served.get(url.replace(f"Expires={expires}", "Expires=soon"))
    assert status == 403


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "a/../../secret.txt",
        "a//b.csv",
        "/abs.csv",
        "a/b/c/d.csv",
        ".hidden",
        "",
        "x" * 201,
        "é.csv",
        "a b.csv",
        "-x.csv",
    ],
)
def test_unsafe_names_get_no_link(links: Links, name: str) -> None:
    with pytest.raises(ValueError, match="not a servable file"):
        links.url("http://h", "exports", name)


def test_unknown_kinds_get_no_link(links: Links) -> None:
    with pytest.raises(ValueError, match="not a servable file"):
        links.url("http://h", "etc", "passwd")


@pytest.mark.parametrize(
    "target",
    [
        "/files/exports/../secret.txt",
        "/files/exports/%2e%2e%2fsecret.txt",
        "/files/exports/..%2Fsecret.txt",
        "/files/auditions/../../secret.txt",
        "/files/../secret.txt",
        "/files/etc/passwd",
        "/files/exports",
    ],
)
def test_paths_outside_a_root_are_not_found(served: Served, target: str) -> None:
    status, _, body = served.request("GET", target + "?Expires=9999999999&Signature=x")
    assert status == 404 and b"not for you" not in body


def test_a_missing_file_and_other_methods(
    served: Served, links: Links, roots: dict[str, Path]
) -> None:
    url = links.url(base(served), "exports", "gone.csv")
    status, _, body = served.get(url)
    assert status == 404 and b"NotFound" in body
    assert served.get(links.url(base(served), "exports", "report.csv"), "POST")[0] == 405


def test_a_large_file_is_streamed_in_chunks(
    served: Served, links: Links, roots: dict[str, Path]
) -> None:
    size = 3 * CHUNK + 123
    data = os.urandom(size)
    (roots["exports"] / "big.csv").write_bytes(data)
    url = links.url(base(served), "exports", "big.csv")
    status, headers, body = served.get(url)
    assert status == 200 and headers["content-length"] == str(size)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()

    # The ASGI messages themselves: no body message is larger than CHUNK.
    parts = urlsplit(url)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": parts.path,
        "query_string": parts.query.encode(),
        "headers": [],
    }
    asyncio.run(links(scope, receive, send))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["status"] == 200
    assert [len(m["body"]) for m in bodies] == [CHUNK, CHUNK, CHUNK, 123]
    assert [m["more_body"] for m in bodies] == [True, True, True, False]
    assert b"".join(m["body"] for m in bodies) == data

"""MediaRoute behind a real uvicorn on 127.0.0.1, spoken to with http.client.

The prompts are real WAV files made by a TtsService (with the recording
engine: the unit under test is the route). Raw request targets go on the
wire as written, so traversal attempts reach the route unnormalised.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.dialogue.config import TTSConfig
from gateway.tts import Prompt, TtsService
from gateway.tts.media import MediaRoute
from tests.tts.engines import RecordingEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, cache: Path) -> None:
        self.service = TtsService(cache, RecordingEngine())
        self.prompt: Prompt = asyncio.run(self.service.prompt("a prompt to fetch", TTSConfig()))
        self.route = MediaRoute(self.service)
        self.port = free_port()
        config = uvicorn.Config(
            self.route, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def request(
        self, method: str, target: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, target, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("media"))
    yield s
    s.stop()


def test_media_get_sends_the_exact_file_with_headers(served: Served) -> None:
    status, headers, body = served.request("GET", f"/media/{served.prompt.name}")
    assert status == 200
    assert body == served.prompt.path.read_bytes()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert headers["content-type"] == "audio/wav"
    assert headers["content-length"] == str(len(body))
    assert headers["cache-control"] == "public, max-age=86400"
    assert headers["etag"] == f'"{served.prompt.name[:-4]}"'


def test_media_head_sends_headers_only(served: Served) -> None:
    status, headers, body = served.request("HEAD", f"/media/{served.prompt.name}")
    assert status == 200 and body == b""
    assert headers["content-length"] == str(served.prompt.path.stat().st_size)
    assert headers["content-type"] == "audio/wav"


def test_media_if_none_match_is_304(served: Served) -> None:
    etag = f'"{served.prompt.name[:-4]}"'
    status, headers, body = served.request(
        "GET", f"/media/{served.prompt.name}", {"If-None-Match": etag}
    )
    assert (status, body) == (304, b"")
    assert headers["etag"] == etag
    status, _, _ = served.request(
        "GET", f"/media/{served.prompt.name}", {"If-None-Match": '"other"'}
    )
    assert status == 200


@pytest.mark.parametrize(
    "target",
    [
        "/media/../etc/passwd",
        "/media/..%2f..%2fetc%2fpasswd",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/media/x.wav",
        "/media/" + "0" * 64 + ".wav",  # well-formed, unknown
        "/media/",
        "/media",
        "/other/" + "0" * 64 + ".wav",
    ],
)
def test_media_unknown_or_malformed_names_are_404(served: Served, target: str) -> None:
    status, _, body = served.request("GET", target)
    assert status == 404 and b"RIFF" not in body


def test_media_near_misses_of_a_real_name_are_404(served: Served) -> None:
    name = served.prompt.name
    for target in (f"/media/{name.upper()}", f"/media/{name}/", f"/media/{name[:-4]}", f"/media//{name}",
                   f"/media/{name}%00", f"/media/{name[:-4]}.wav16"):  # fmt: skip
        assert served.request("GET", target)[0] == 404, target


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_media_other_methods_are_405(served: Served, method: str) -> None:
    status, headers, _ = served.request(method, f"/media/{served.prompt.name}")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_media_file_removed_under_the_server_is_404(tmp_path: Path) -> None:
    service = TtsService(tmp_path, RecordingEngine())
    prompt = asyncio.run(service.prompt("short-lived", TTSConfig()))
    prompt.path.unlink()
    route = MediaRoute(service)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": f"/media/{prompt.name}", "headers": []}
    asyncio.run(route(scope, receive, send))
    assert sent[0]["status"] == 404
    assert "not_found=1" in repr(route)

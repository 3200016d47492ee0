"""Gateways with `/ws` on, and clients for them: the websockets library's sync client,
and a raw one (its sans-I/O protocol over a socket we read, or stop reading, ourselves)."""

from __future__ import annotations

import random
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests.conftest import DEMO, GatewayProcess, write_config
from tests.loopback import LoopbackServer, Reply, Request

TOKEN = "ws-token-0123456789abcdef"
BOT_SECRET = "echo-bot-secret-0123456789"
SEND_QUEUE = 64
MAX_FRAME = 4096
GRACE = 1.5
SEND_TIMEOUT = 1.0
# The demo greeting, made long (about 6 KB of UTF-8), for an instance whose
# every prompt fills the socket quickly.
LONG_GREETING = "您好，欢迎致电演示银行。" * 150
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def instance(directory: Path, instance_id: str, top: str = "", greeting: str = "") -> None:
    """A copy of the demo instance under another id (and another greeting, or a bot)."""
    text = DEMO.read_text(encoding="utf-8")
    text = re.sub(r"^Concurrency = \d+", "Concurrency = 5000", text, count=1, flags=re.M)
    text = text.replace('InstanceId = "demo"', f'InstanceId = "{instance_id}"\n{top}')
    if greeting:
        text = re.sub(r"^GreetingWords = .*$", f'GreetingWords = "{greeting}"', text, flags=re.M)
    (directory / "instances" / f"{instance_id}.toml").write_text(text, encoding="utf-8")


def websocket_table(**overrides: object) -> str:
    settings: dict[str, object] = {
        "enabled": True,
        "tokens": [TOKEN],
        "default_instance": "demo",
        "grace_seconds": GRACE,
        "send_queue": SEND_QUEUE,
        "max_frame_bytes": MAX_FRAME,
        "rate": 100_000,
        "burst": 100_000,
        "send_timeout_seconds": SEND_TIMEOUT,
        **overrides,
    }
    lines = [f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items()]
    return "\n[adapters.websocket]\n" + "\n".join(lines) + "\n"


def prepare(d: Path, extra: str = "", **overrides: object) -> Path:
    """gateway.toml with `[adapters.websocket]`, the demo instance and `long`."""
    config = write_config(
        d,
        demo_overrides={r"^Concurrency = \d+": "Concurrency = 5000"},
        extra=extra + websocket_table(**overrides),
    )
    instance(d, "long", greeting=LONG_GREETING)
    return config


def _echo(request: Request) -> Reply:
    """A bot that answers "echo <utterance>" after a random few milliseconds."""
    body: Any = request.json
    answer = {"answer": f"echo {body.get('utterance', '')}", "expects_input": True}
    return Reply.json(answer, delay=random.uniform(0, 0.01))


@pytest.fixture(scope="package")
def bot() -> Iterator[LoopbackServer]:
    with LoopbackServer(_echo) as server:
        yield server


@pytest.fixture(scope="package")
def gw(tmp_path_factory: pytest.TempPathFactory, bot: LoopbackServer) -> Iterator[GatewayProcess]:
    """The main gateway: roomy limits, a 1.5 s grace, the demo, `long` and `echo` instances."""
    d = tmp_path_factory.mktemp("ws")
    bots = f"""
[[bots]]
name = "echo"
kind = "webhook"
url = "http://127.0.0.1:{bot.port}/bot"
secret = "{BOT_SECRET}"
"""
    config = prepare(d, bots)
    instance(d, "echo", top='Chatbot = "echo"')
    g = GatewayProcess(config, d / "gateway.log")
    yield g
    g.stop()


def url(gw: GatewayProcess, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


def open_ws(gw: GatewayProcess, **kw: Any) -> ClientConnection:
    """The websockets sync client, authenticated, buffering everything it receives."""
    kw.setdefault("additional_headers", HEADERS)
    kw.setdefault("subprotocols", [Subprotocol("ivrgw.v1")])
    return connect(url(gw), max_queue=None, open_timeout=5, **kw)


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(orjson.dumps(message).decode())


def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(ws.recv(timeout=timeout))
    return frame


def metrics(gw: GatewayProcess) -> dict[str, float]:
    """Every sample of /metrics by its name and labels, as written."""
    _, _, body = gw.get("/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_for_metric(gw: GatewayProcess, name: str, above: float, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = metrics(gw).get(name, 0.0)
        if value > above or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class RawClient:
    """A websocket client whose socket we read (or not) ourselves."""

    def __init__(self, gw: GatewayProcess, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            # Before connect, so the window the gateway sees is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", gw.port))
        # Bytes of frames not yet taken by the kernel (send_nowait).
        self.pending = b""
        self.proto = ClientProtocol(parse_uri(url(gw)), subprotocols=[Subprotocol("ivrgw.v1")])
        request = self.proto.connect()
        request.headers["Authorization"] = f"Bearer {TOKEN}"
        self.proto.send_request(request)
        self._flush()
        while not any(isinstance(e, Response) for e in self._read()):
            pass
        assert self.proto.handshake_exc is None, self.proto.handshake_exc
        self.frames: list[Frame] = []

    def _flush(self) -> None:
        data = self.pending + b"".join(self.proto.data_to_send())
        self.pending = b""
        if data:
            self.sock.sendall(data)

    def _read(self) -> list[object]:
        data = self.sock.recv(65536)
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        events: list[object] = list(self.proto.events_received())
        self._flush()  # a close frame's answer, say
        return events

    def send(self, **message: Any) -> None:
        self.proto.send_text(orjson.dumps(message))
        self._flush()

    def send_nowait(self, **message: Any) -> None:
        """Queue a frame and write what the kernel takes now, without blocking."""
        self.proto.send_text(orjson.dumps(message))
        self.pending += b"".join(self.proto.data_to_send())
        self.sock.setblocking(False)
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            sent = 0
        finally:
            self.sock.settimeout(5)
        self.pending = self.pending[sent:]

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next `n` text frames."""
        texts: list[dict[str, Any]] = []
        while len(texts) < n:
            for event in self._read():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    texts.append(orjson.loads(event.data))
        return texts

    def read_until_closed(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every text frame until the gateway's close frame (or the end of the stream)."""
        texts: list[dict[str, Any]] = []
        for _ in range(limit):
            if self.proto.close_rcvd is not None or self.proto.state.name == "CLOSED":
                break
            for event in self._read():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    texts.append(orjson.loads(event.data))
        return texts

    def abort(self) -> None:
        """Drop the connection with a reset: no close frame, no FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

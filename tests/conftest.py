"""Shared fixtures: a real gateway process on loopback, and a signing client.

`GatewayProcess` writes a config directory, starts `python -m gateway serve`
on a free 127.0.0.1 port, waits for /readyz, and stops exactly the process it
started. `Client` speaks the RPC API over http.client, signing with RPC v1 or
ACS3 the way the official SDKs do (tests/test_sdk.py checks against the SDKs
themselves).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from gateway.net.signing import percent_encode, rpc_v1_signature, sign_acs3_headers

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "instances" / "demo.toml"
KEY_ID, SECRET = "demo-key", "demo-secret"
RO_KEY_ID, RO_SECRET = "ro-key", "ro-secret"


def without_fallback(instance_toml: str) -> str:
    """An instance file's text without its [FallbackConfig] table (tests add their own)."""
    return re.sub(r"\[FallbackConfig\].*?TurnBudget = \d+\n", "", instance_toml, flags=re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    directory: Path,
    *,
    auth: bool = True,
    demo_overrides: Mapping[str, str] | None = None,
    extra: str = "",
) -> Path:
    """A gateway.toml with the demo key, a read-only key and the demo instance."""
    instances = directory / "instances"
    instances.mkdir(parents=True, exist_ok=True)
    demo = DEMO.read_text(encoding="utf-8")
    for pattern, replacement in (demo_overrides or {}).items():
        demo, n = re.subn(pattern, replacement, demo, count=1, flags=re.M)
        assert n == 1, pattern
    (instances / "demo.toml").write_text(demo, encoding="utf-8")
    config = directory / "gateway.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 8080
log_level = "debug"

[auth]
enabled = {"true" if auth else "false"}

[[access_keys]]
id = "{KEY_ID}"
secret = "{SECRET}"
policy = "full"
user = "tester"

[[access_keys]]
id = "{RO_KEY_ID}"
secret = "{RO_SECRET}"
policy = "read-only"
user = "viewer"

[instances]
dir = "instances"
{extra}
""",
        encoding="utf-8",
    )
    return config


class GatewayProcess:
    def __init__(
        self, config: Path, log: Path, port: int | None = None, ready_path: str = "/readyz"
    ) -> None:
        self.port = port or free_port()
        self.ready_path = ready_path
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(config),
                "--port",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()}")
            try:
                status, _, _ = self.get(self.ready_path)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("gateway did not become ready")

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def utc_now(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


class Client:
    """The RPC API over one keep-alive connection, signed like the SDKs sign."""

    def __init__(self, port: int, key_id: str = KEY_ID, secret: str = SECRET) -> None:
        self.port = port
        self.key_id = key_id
        self.secret = secret
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def close(self) -> None:
        self.conn.close()

    def raw(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        self.conn.request(method, target, body=body or None, headers=dict(headers or {}))
        r = self.conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())

    def signed_v1_params(
        self, params: Mapping[str, str], method: str = "GET", **overrides: str
    ) -> dict[str, str]:
        p = {
            "Format": "JSON",
            "Version": "2018-06-12",
            "AccessKeyId": self.key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": utc_now(),
            **params,
        }
        p.update(overrides)
        p["Signature"] = rpc_v1_signature(self.secret, method, p)
        return p

    def call(self, params: Mapping[str, str], method: str = "GET", **overrides: str) -> Response:
        """RPC v1: GET with the query string, or POST with a form body."""
        p = self.signed_v1_params(params, method, **overrides)
        encoded = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in p.items())
        if method == "GET":
            return self.raw("GET", "/?" + encoded)
        return self.raw(
            "POST", "/", encoded.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        )

    def call_acs3(
        self, action: str, params: Mapping[str, str], **header_overrides: str
    ) -> Response:
        """ACS3-HMAC-SHA256: parameters in the query (spaces as '+'), action in a header."""
        query = list(params.items())
        headers = {
            "host": f"127.0.0.1:{self.port}",
            "x-acs-action": action,
            "x-acs-version": "2018-06-12",
            "x-acs-date": utc_now(),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "accept": "application/json",
        }
        headers.update(header_overrides)
        sign_acs3_headers(self.key_id, self.secret, "POST", "/", query, headers, b"")
        return self.raw("POST", "/?" + urlencode(query), b"", headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with auth on, the demo instance, for a test module."""
    d = tmp_path_factory.mktemp("gw")
    gw = GatewayProcess(write_config(d), d / "gateway.log")
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[Client]:
    with Client(gateway.port) as c:
        yield c


def conversation_id() -> str:
    return f"conv-{uuid.uuid4()}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "Client",
    "GatewayProcess",
    "Response",
    "conversation_id",
    "free_port",
    "without_fallback",
    "write_config",
]

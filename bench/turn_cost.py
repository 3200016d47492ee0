"""Instructions per turn, counted by callgrind: `python -m bench.turn_cost`.

Wall-clock figures on a shared VM drift by tens of percent; instruction
counts do not (the same code, inputs and interpreter give the same count).
This drives each handler in-process, with an ASGI scope like the one uvicorn
builds, and reports instructions per request for:

- the gateway's RPC Dialogue turn, auth off;
- the same turn RPC v1 signed (every request its own nonce);
- the Starlette baseline endpoint (bench/servers.py) with the same query.

Each case runs twice under `valgrind --tool=callgrind`, with N and 0 timed
requests after the same set-up; the difference divided by N is the cost of
one request. Needs valgrind (Debian package `valgrind`). The server itself
(uvicorn, httptools, the kernel) is not in these numbers: they compare
handler work, and the rps benchmark measures the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import gwconfig
from bench.rpc_turn import Signer, begin_params, conversation, turn_params

CASES = ("gateway-unsigned", "gateway-signed", "starlette")
WARM = 300


def _scope(request: bytes) -> dict[str, Any]:
    target = request.split(b" ", 2)[1]
    path, _, query = target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "root_path": "",
        "query_string": query,
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _inner(case: str, n: int) -> None:
    """Set up `case`, warm it, then run `n` requests (the part being counted)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    if case == "starlette":
        from bench.servers import app as starlette

        scope = _scope(Signer(1).request(turn_params(conversation(0))))

        async def drive_starlette(count: int) -> None:
            for _ in range(count):
                await starlette(dict(scope), _receive, send)

        asyncio.run(drive_starlette(WARM))
        sent.clear()
        asyncio.run(drive_starlette(n))
        return

    from gateway.app import Gateway
    from gateway.settings import load_instances, load_settings

    signed = case == "gateway-signed"
    tmp = Path(tempfile.mkdtemp(prefix="ivr-cost-"))
    settings = load_settings(gwconfig.write(tmp, port=1, auth=signed))
    gateway = Gateway(settings, load_instances(settings.instances_dir))
    key = gwconfig.DEMO_KEY
    signer = Signer(1, key["id"], key["secret"]) if signed else Signer(1)

    def call(scope: dict[str, Any]) -> None:
        # Nothing on the local turn path suspends: one send() runs it whole.
        with contextlib.suppress(StopIteration):
            gateway(scope, _receive, send).send(None)

    for i in range(64):
        call(_scope(signer.request(begin_params(conversation(i)))))
    # Signed requests need their own nonces: build them all before counting,
    # the same number whatever n is, so set-up cancels out.
    total = WARM + max(n, 2000)
    if signed:
        scopes = [_scope(signer.request(turn_params(conversation(i % 64)))) for i in range(total)]
    else:
        scopes = [_scope(signer.request(turn_params(conversation(i)))) for i in range(64)] * (
            total // 64 + 1
        )
    for k in range(WARM):
        call(scopes[k])
    if any(m.get("status", 200) != 200 for m in sent):
        raise SystemExit(f"{case}: a warm-up request failed: {sent[:2]}")
    sent.clear()
    for k in range(WARM, WARM + n):
        call(scopes[k])


def _count(case: str, n: int) -> int:
    out = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, "-m", "bench.turn_cost", "--inner", case, str(n),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise RuntimeError(f"no callgrind total for {case}:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def measure(n: int = 2000) -> dict[str, int]:
    """Instructions per request for each case."""
    return {case: (_count(case, n) - _count(case, 0)) // n for case in CASES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_cost", description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="counted requests per case")
    parser.add_argument("--inner", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args.inner[0], int(args.inner[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package valgrind)", file=sys.stderr)
        return 2
    costs = measure(args.n)
    base = costs["starlette"]
    print("instructions per request (callgrind, in-process handler only)")
    for case, cost in costs.items():
        print(f"  {case:<18}{cost:>10,}  {cost / base:5.2f}x starlette")
    return 0


if __name__ == "__main__":
    sys.exit(main())

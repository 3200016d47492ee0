"""Profile the RPC turn path in-process: `python -m bench.profile_turn [--signed] [-n N]`.

Drives `Gateway.__call__` (path table, then RpcApi) with a fake ASGI
scope/receive/send, no server and no event loop (nothing in the turn path
suspends, so one `coro.send(None)` runs a whole request), under cProfile.
Prints the per-turn wall time and the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import gwconfig
from bench.rpc_turn import Signer, begin_params, turn_params
from gateway.app import Gateway
from gateway.settings import load_instances, load_settings


def _scope(request: bytes) -> dict[str, Any]:
    """The ASGI scope uvicorn builds for one of the benchmark's GET requests."""
    line, *headers = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    target = line.split(b" ")[1]
    path, _, query = target.partition(b"?")
    return {
        "type": "http",
        "method": "GET",
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "headers": [
            (name.strip().lower(), value.strip())
            for name, value in (h.split(b":", 1) for h in headers)
        ],
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Send:
    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


def _drive(gw: Gateway, scope: dict[str, Any], send: _Send) -> None:
    coro = gw(scope, _receive, send)
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the turn path suspended; this driver cannot run it")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_turn", description=__doc__)
    parser.add_argument("--signed", action="store_true", help="auth on, RPC v1 signed requests")
    parser.add_argument("-n", type=int, default=20_000, help="turns")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ivr-bench-prof-") as tmp:
        settings = load_settings(gwconfig.write(Path(tmp), port=0, auth=args.signed))
        gw = Gateway(settings, load_instances(settings.instances_dir))
    gw.ready = True
    key = gwconfig.DEMO_KEY
    signer = Signer(80, key["id"], key["secret"]) if args.signed else Signer(80)
    send = _Send()
    _drive(gw, _scope(signer.request(begin_params("prof-0"))), send)
    if send.status != 200:
        raise RuntimeError(f"BeginDialogue answered {send.status}")
    params = turn_params("prof-0")
    scopes = [_scope(signer.request(params, nonce=f"n{i}")) for i in range(args.n)]

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for scope in scopes:
        _drive(gw, scope, send)
    profiler.disable()
    elapsed = time.perf_counter() - started
    if send.status != 200:
        raise RuntimeError(f"Dialogue answered {send.status}")

    # And once more without the profiler, for the undistorted per-turn cost.
    scopes = [_scope(signer.request(params, nonce=f"m{i}")) for i in range(args.n)]
    started = time.perf_counter()
    for scope in scopes:
        _drive(gw, scope, send)
    plain = time.perf_counter() - started

    print(
        f"{args.n} turns, signed={args.signed}: {plain / args.n * 1e6:.1f} us/turn "
        f"({elapsed / args.n * 1e6:.1f} us under cProfile)"
    )
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()

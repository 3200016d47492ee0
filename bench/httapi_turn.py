"""Measurement 3: an httapi turn (front=freeswitch) vs the bare Starlette floor.

The requests are what FreeSWITCH sends (pbx-protocols.md §7): a GET with
the session's params, the caller profile and, once, the input result. Each
connection is one call, begun before the clock starts; every request carries
the next `ivrgw_turn` (so each one is a new turn, not an idempotent repeat)
and the recognizer's plain-text result for the demo's balance question.
The baseline answers the same requests with the gateway's own document.
Interleaved rounds; the ratio is the median of same-round ratios.
Run: `python -m bench.httapi_turn [--duration S] [--rounds N]`.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import gwconfig
from bench.loadgen import fetch, run_load
from bench.procs import LOADGEN_CPU, Server, Servers, can_pin, cpu_seconds, free_port
from bench.rpc_turn import HOST, _median, _summary

PATH = "/freeswitch/httapi"
USER, PASSWORD = "fs", "bench-password"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
UTTERANCE = "查询余额"
SAFE = "/"  # FreeSWITCH leaves '/' unencoded


def _fields(session: str, port: int) -> list[tuple[str, str]]:
    return [
        ("session_id", session),
        ("url", f"http://127.0.0.1:{port}{PATH}"),
        ("instance", "demo"),
        ("hostname", "fs1"),
        ("Caller-Direction", "inbound"),
        ("Caller-Logical-Direction", "inbound"),
        ("Caller-Dialplan", "xml"),
        ("Caller-Caller-ID-Name", "Bench"),
        ("Caller-Caller-ID-Number", "13800000000"),
        ("Caller-ANI", "13800000000"),
        ("Caller-Destination-Number", "5000"),
        ("Caller-Unique-ID", session),
        ("Caller-Source", "mod_sofia"),
        ("Caller-Context", "default"),
        ("Caller-Channel-Name", f"sofia/internal/13800000000@127.0.0.1/{session}"),
    ]


def request(port: int, fields: list[tuple[str, str]]) -> bytes:
    q = "&".join(f"{k}={quote(v, safe=SAFE)}" for k, v in fields)
    return (
        f"GET {PATH}?{q} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mod_httapi/1.0\r\n"
        f"Accept: */*\r\nCookie: \r\nAuthorization: {AUTH}\r\n\r\n"
    ).encode()


def first_request(port: int, session: str) -> bytes:
    return request(port, _fields(session, port))


def turn_request(port: int, session: str, turn: int) -> bytes:
    extra = [
        ("ivrgw_turn", str(turn)),
        ("ivrgw_input", UTTERANCE),
        ("input_type", "detected_speech"),
    ]
    return request(port, _fields(session, port) + extra)


def _gateway(servers: Servers, tmp: Path) -> Server:
    port = free_port()
    config = gwconfig.write(tmp / "gw", port=port, auth=True)
    adapter = gwconfig.freeswitch_adapter(USER, PASSWORD)
    gwconfig.update(config, {"adapters": {"freeswitch": adapter}})
    return servers.gateway("gateway-httapi", config, port)


def run(duration: float, connections: int, rounds: int = 7, log: Any = print) -> dict[str, Any]:
    pin = can_pin()
    cpu = LOADGEN_CPU if pin else None
    slice_s = duration / rounds
    # Enough new turns for one round at up to 40k req/s (warm-up included).
    per_round = int(40_000 * (slice_s + 1.5) / connections) + 1
    slices: dict[str, list[dict[str, Any]]] = {"starlette": [], "gateway-httapi": []}

    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-fs-") as tmpdir,
        Servers(Path(tmpdir), pin) as servers,
    ):
        tmp = Path(tmpdir)
        gw = _gateway(servers, tmp)
        # Begin the calls, and capture one turn's document for the baseline.
        for i in range(connections + 1):
            status, _ = fetch(HOST, gw.port, first_request(gw.port, f"bench-{i}"))
            assert status == 200
        status, document = fetch(HOST, gw.port, turn_request(gw.port, f"bench-{connections}", 1))
        if status != 200 or b"<speak" not in document or "余额".encode() not in document:
            raise RuntimeError(f"unexpected httapi document: {status} {document[:300]!r}")
        body_file = tmp / "body.xml"
        body_file.write_bytes(document)
        sl_port = free_port()
        starlette = servers.start(
            "starlette",
            [
                "-m",
                "uvicorn",
                "bench.servers:app",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--port",
                str(sl_port),
                "--host",
                HOST,
            ],
            sl_port,
            env={"BENCH_BODY_FILE": str(body_file)},
        )
        starlette.wait_ready("/")
        # Every request is a new turn of its call: each round gets fresh turn numbers.
        sl_reqs = [[turn_request(sl_port, f"bench-{i}", 1)] * per_round for i in range(connections)]
        next_turn = 1
        for r in range(rounds):
            order = (
                ["starlette", "gateway-httapi"] if r % 2 == 0 else ["gateway-httapi", "starlette"]
            )
            for name in order:
                if name == "starlette":
                    server, reqs = starlette, sl_reqs
                else:
                    server = gw
                    reqs = [
                        [
                            turn_request(gw.port, f"bench-{i}", t)
                            for t in range(next_turn, next_turn + per_round)
                        ]
                        for i in range(connections)
                    ]
                    next_turn += per_round
                log(f"  round {r + 1}/{rounds}: {name} ...")
                stats = run_load(
                    HOST,
                    server.port,
                    reqs,
                    slice_s,
                    warmup=1.0,
                    # The baseline's body is fixed; the gateway's carries the turn number.
                    body_length=len(document) if name == "starlette" else None,
                    cpu=cpu,
                    server_cpu=lambda pid=server.pid: cpu_seconds(pid),
                )
                slices[name].append({**_summary(stats), "round": r + 1})
    ratios = [
        round(g["rps"] / s["rps"], 3)
        for g, s in zip(slices["gateway-httapi"], slices["starlette"], strict=True)
        if s["rps"]
    ]
    return {
        "connections": connections,
        "rounds": rounds,
        "pinned": pin,
        "slices": slices,
        "ratios_per_round": ratios,
        "ratio": _median(ratios),
        "valid": all(
            not x["errors"] and not x["exhausted_connections"]
            for runs in slices.values()
            for x in runs
        ),
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.httapi_turn")
    parser.add_argument("--duration", type=float, default=14.0, help="seconds per server")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    result = run(args.duration, args.connections, args.rounds)
    print(
        f"{'round':<7}{'server':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'srv cpu':>9}{'gen cpu':>9}"
    )
    for name, runs in result["slices"].items():
        for x in runs:
            errors = sum(x["errors"].values())
            print(
                f"{x['round']:<7}{name:<16}{x['rps']:>9.0f}{x['p50_ms']:>9.2f}"
                f"{x['p99_ms']:>9.2f}{errors:>8}{x['server_cpu'] or 0:>9.2f}"
                f"{x['generator_cpu']:>9.2f}"
            )
    print(
        f"httapi turn / starlette: median {result['ratio']:.2f}x, rounds "
        f"{result['ratios_per_round']}, valid={result['valid']}"
    )


if __name__ == "__main__":
    main()

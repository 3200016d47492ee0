"""Measurement 1: Dialogue turns per second through the RPC API vs a bare Starlette route.

Interleaved rounds of Starlette, gateway (auth off) and gateway (RPC v1
signed); each gateway figure is divided by the Starlette figure of the same
round, and the median over rounds is reported. Every request is built before
the clock starts (signing per request would make the generator the
bottleneck).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import gwconfig
from bench.loadgen import RunStats, fetch, run_load
from bench.procs import LOADGEN_CPU, Server, Servers, can_pin, cpu_seconds, free_port
from gateway.net.signing import percent_encode, rpc_v1_signature

HOST = "127.0.0.1"
INSTANCE = "demo"
UTTERANCE = "查询余额"
CALLING = "13800000000"
INITIAL_CONTEXT = '{"balance":"100"}'
EXPECTED_TEXT = "余额为100元"  # in the demo bot's answer to UTTERANCE
BUDGET_RPS = 40_000  # pre-built signed requests cover the run at this total rate
MAX_PREBUILT = 1_000_000


@dataclass(frozen=True, slots=True)
class Signer:
    """Builds request bytes; signs them (RPC v1) when `key_id` is set."""

    port: int
    key_id: str | None = None
    secret: str = ""

    def request(self, params: Mapping[str, str], nonce: str = "", timestamp: str = "") -> bytes:
        p = {"Format": "JSON", "Version": "2018-06-12", **params}
        if self.key_id is not None:
            p.update(
                AccessKeyId=self.key_id,
                SignatureMethod="HMAC-SHA1",
                SignatureVersion="1.0",
                SignatureNonce=nonce or os.urandom(12).hex(),
                Timestamp=timestamp or now_timestamp(),
            )
            p["Signature"] = rpc_v1_signature(self.secret, "GET", p)
        query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in p.items())
        return (
            f"GET /?{query} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "User-Agent: ivr-gateway-bench\r\nAccept: */*\r\n\r\n"
        ).encode("ascii")


def now_timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def conversation(i: int) -> str:
    return f"bench-{i}"


def begin_params(conversation_id: str) -> dict[str, str]:
    return {
        "Action": "BeginDialogue",
        "InstanceId": INSTANCE,
        "ConversationId": conversation_id,
        "CallingNumber": CALLING,
        "InitialContext": INITIAL_CONTEXT,
    }


def turn_params(conversation_id: str) -> dict[str, str]:
    return {
        "Action": "Dialogue",
        "InstanceId": INSTANCE,
        "ConversationId": conversation_id,
        "Utterance": UTTERANCE,
    }


def _signed_turns(signer: Signer, conn: int, count: int) -> list[bytes]:
    """`count` signed Dialogue requests for connection `conn`, each with its own nonce."""
    prefix = f"{os.urandom(6).hex()}-{conn}-"
    params = turn_params(conversation(conn))
    out: list[bytes] = []
    timestamp = now_timestamp()
    for n in range(count):
        if n % 1000 == 0:
            timestamp = now_timestamp()
        out.append(signer.request(params, f"{prefix}{n}", timestamp))
    return out


def build_signed(signer: Signer, connections: int, per_connection: int) -> list[list[bytes]]:
    """Signed requests for every connection, built on every CPU we may use."""
    workers = max(1, min(len(os.sched_getaffinity(0)), connections))
    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_signed_turns, signer, i, per_connection) for i in range(connections)
        ]
        return [f.result() for f in futures]


def _call(server: Server, request: bytes) -> bytes:
    status, body = fetch(HOST, server.port, request)
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status}: {body[:300]!r}")
    return body


def begin_all(server: Server, signer: Signer, connections: int) -> None:
    for i in range(connections):
        _call(server, signer.request(begin_params(conversation(i))))


def capture_body(server: Server, signer: Signer) -> bytes:
    """One real gateway response to the timed turn, for the baseline to send."""
    _call(server, signer.request(begin_params("bench-capture")))
    body = _call(server, signer.request(turn_params("bench-capture")))
    if EXPECTED_TEXT not in body.decode("utf-8"):
        raise RuntimeError(f"unexpected answer to {UTTERANCE!r}: {body.decode()}")
    return body


def _gateway(servers: Servers, tmp: Path, name: str, auth: bool) -> Server:
    port = free_port()
    config = gwconfig.write(tmp / name, port=port, auth=auth)
    return servers.gateway(name, config, port)


def _summary(stats: RunStats) -> dict[str, Any]:
    return {
        "rps": round(stats.rps, 1),
        "requests": stats.requests,
        "duration_s": round(stats.duration, 3),
        "p50_ms": round(stats.percentile(50) * 1e3, 3),
        "p99_ms": round(stats.percentile(99) * 1e3, 3),
        "errors": stats.errors,
        "exhausted_connections": stats.exhausted,
        "generator_cpu": round(stats.gen_cpu, 3),
        "server_cpu": None if stats.server_cpu is None else round(stats.server_cpu, 3),
    }


SERVERS = ("starlette", "gateway-unsigned", "gateway-signed")
SLICE_WARMUP = 1.0


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run(duration: float, connections: int, rounds: int = 9, log: Any = print) -> dict[str, Any]:
    """Interleaved rounds of the three loads; the result is JSON-ready.

    All three servers stay up. Each round gives each server `duration /
    rounds` seconds (after a 1 s warm-up), in an order that rotates from
    round to round. A gateway's ratio is the median, over rounds, of its
    req/s divided by the Starlette req/s of the same round: this machine's
    speed drifts by tens of percent over seconds, and adjacent slices see
    nearly the same machine.
    """
    pin = can_pin()
    cpu = LOADGEN_CPU if pin else None
    slice_s = duration / rounds
    per_connection = min(
        MAX_PREBUILT // (connections * rounds),
        int(BUDGET_RPS * (slice_s + SLICE_WARMUP + 1.0) / connections) + 1,
    )
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmpdir,
        Servers(Path(tmpdir), pin) as servers,
    ):
        tmp = Path(tmpdir)
        signed_gw = _gateway(servers, tmp, "gateway-signed", auth=True)
        signed = Signer(signed_gw.port, gwconfig.DEMO_KEY["id"], gwconfig.DEMO_KEY["secret"])
        body = capture_body(signed_gw, signed)
        body_file = tmp / "body.json"
        body_file.write_bytes(body)

        port = free_port()
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
                str(port),
                "--host",
                HOST,
            ],
            port,
            env={"BENCH_BODY_FILE": str(body_file)},
        )
        starlette.wait_ready("/")
        # The baseline gets the same request shape: a signed turn per connection, repeated.
        sl_signer = Signer(port, signed.key_id, signed.secret)
        sl_reqs = [
            [sl_signer.request(turn_params(conversation(i)))] * per_connection
            for i in range(connections)
        ]
        if _call(starlette, sl_reqs[0][0]) != body:
            raise RuntimeError("the baseline does not answer with the captured body")

        plain_gw = _gateway(servers, tmp, "gateway-unsigned", auth=False)
        plain = Signer(plain_gw.port)
        plain_reqs = [
            [plain.request(turn_params(conversation(i)))] * per_connection
            for i in range(connections)
        ]
        begin_all(plain_gw, plain, connections)
        begin_all(signed_gw, signed, connections)

        log(f"  building {rounds * connections * per_connection} signed requests ...")
        started = time.perf_counter()
        signed_batches = [build_signed(signed, connections, per_connection) for _ in range(rounds)]
        build_s = time.perf_counter() - started

        targets = {
            "starlette": starlette,
            "gateway-unsigned": plain_gw,
            "gateway-signed": signed_gw,
        }
        for r in range(rounds):
            order = SERVERS[r % 3 :] + SERVERS[: r % 3]
            for name in order:
                server = targets[name]
                reqs = (
                    signed_batches[r]
                    if name == "gateway-signed"
                    else (sl_reqs if name == "starlette" else plain_reqs)
                )
                log(f"  round {r + 1}/{rounds}: {name} (pid {server.pid}) ...")
                pid = server.pid
                stats = run_load(
                    HOST,
                    server.port,
                    reqs,
                    slice_s,
                    warmup=SLICE_WARMUP,
                    body_length=len(body),
                    cpu=cpu,
                    server_cpu=lambda pid=pid: cpu_seconds(pid),
                )
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{name} died during the run:\n{server.log_tail()}")
                slices[name].append({**_summary(stats), "round": r + 1, "server_pid": pid})
            signed_batches[r] = []

    def ratios(name: str) -> list[float]:
        return [
            round(g["rps"] / s["rps"], 3)
            for g, s in zip(slices[name], slices["starlette"], strict=True)
            if s["rps"]
        ]

    summary = {
        name: {
            "rps_median": round(_median([x["rps"] for x in runs]), 1),
            "p50_ms_median": round(_median([x["p50_ms"] for x in runs]), 3),
            "p99_ms_median": round(_median([x["p99_ms"] for x in runs]), 3),
            "server_cpu_median": _median([x["server_cpu"] or 0.0 for x in runs]),
            "generator_cpu_median": _median([x["generator_cpu"] for x in runs]),
        }
        for name, runs in slices.items()
    }
    per_round = {name: ratios(name) for name in ("gateway-signed", "gateway-unsigned")}
    return {
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "slice_s": slice_s,
        "warmup_s": SLICE_WARMUP,
        "pinned": pin,
        "prebuilt_per_connection": per_connection,
        "prebuild_seconds": round(build_s, 2),
        "response_bytes": len(body),
        "response_body": body.decode("utf-8"),
        "slices": slices,
        "summary": summary,
        "ratios_per_round": per_round,
        "ratio_signed": _median(per_round["gateway-signed"])
        if per_round["gateway-signed"]
        else None,
        "ratio_unsigned": (
            _median(per_round["gateway-unsigned"]) if per_round["gateway-unsigned"] else None
        ),
        "valid": all(
            not x["errors"] and not x["exhausted_connections"]
            for runs in slices.values()
            for x in runs
        ),
    }

"""Measurement: one filtered QueryConversations page over 1,000,000 stored
conversations against the same page over 10,000 (indexes, not scans).

Two databases are built in a temporary directory (executemany in large
transactions): `--large` and `--small` conversations spread over 10
instances, 90 days and a pool of callers that grows with the size (each
caller calls about 20 times in the period). One caller, `TARGET`, has the
same 20 conversations on the demo instance in both, as a real caller's
history does not depend on how many others called. A real gateway is
started on each file (auth on, RPC v1 signed requests over one keep-alive
connection each), and the same page is asked of both in interleaved rounds:

    InstanceId=demo, CallingNumber=TARGET, BeginTime in the last 30 days,
    PageNumber=1, PageSize=10.

The medians and their ratio are printed (the issue's target: at most 2x).
For reference, the page without the caller filter (a one-hour window) is
timed the same way; its TotalCount is a count over every match in the
window, which grows with the traffic, and the line says so.
Run: `python -m bench.query_scale [--large N] [--small N] [--requests R]`.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench import gwconfig
from bench.procs import Server, Servers, can_pin, free_port
from gateway.net.signing import percent_encode, rpc_v1_signature
from gateway.settings import load_settings
from gateway.store.db import open_database

DAY = 86_400_000
SPAN_DAYS = 90
INSTANCES = ["demo", *(f"inst-{n}" for n in range(1, 10))]
TARGET = "13800138000"
TARGET_CALLS = 20
BATCH = 100_000
END = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC: the newest BeginTime
SECRET = gwconfig.DEMO_KEY["secret"]
KEY_ID = gwconfig.DEMO_KEY["id"]


def _rows(n: int, rng: random.Random) -> Iterator[tuple[object, ...]]:
    """`n` conversations in BeginTime order, then the target's 20 on demo."""
    callers = max(50, n // 20)
    start = END - SPAN_DAYS * DAY
    step = SPAN_DAYS * DAY / n
    outcomes = ("answer", "answer", "answer", "unrecognized_final", "silence_final", "greeting")
    for k in range(n):
        begin = start + int(k * step) + rng.randrange(1000)
        inputs = rng.randrange(0, 7)
        effective = rng.randrange(0, inputs + 1)
        transferred = rng.random() < 0.2
        yield (
            INSTANCES[rng.randrange(len(INSTANCES))],
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            f"139{rng.randrange(callers):08d}",
            "95555",
            begin,
            begin + rng.randrange(20_000, 600_000),
            int(transferred),
            "sg-1" if transferred else "",
            inputs,
            effective,
            inputs - effective,
            rng.choice(outcomes),
            "rpc",
            "EndDialogue",
        )
    for k in range(TARGET_CALLS):
        begin = END - k * (SPAN_DAYS * DAY // TARGET_CALLS)
        yield ("demo", f"target-{k}", TARGET, "95555", begin, begin + 60_000, 0, "", 3, 2, 1,
               "answer", "rpc", "EndDialogue")  # fmt: skip


_INSERT = """
INSERT INTO conversations
    (InstanceId, ConversationId, CallingNumber, CalledNumber, BeginTime, EndTime,
     TransferredToAgent, SkillGroupId, UserUtteranceCount, EffectiveAnswerCount,
     UnrecognizedCount, LastOutcome, FrontDoor, HangupCause)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def build(path: Path, n: int, seed: int = 7) -> float:
    """Create the gateway's database at `path` with `n` (+20) conversations; seconds taken."""
    started = time.perf_counter()
    open_database(path).close()  # the schema, by the gateway's own migrations
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB while building
    rng = random.Random(seed)
    batch: list[tuple[object, ...]] = []
    for row in _rows(n, rng):
        batch.append(row)
        if len(batch) == BATCH:
            _flush(db, batch)
    _flush(db, batch)
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - started


def _flush(db: sqlite3.Connection, batch: list[tuple[object, ...]]) -> None:
    db.execute("BEGIN")
    db.executemany(_INSERT, batch)
    db.execute("COMMIT")
    batch.clear()


class Rpc:
    """Signed RPC v1 GETs over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, params: dict[str, str]) -> tuple[float, dict[str, object]]:
        p = {
            "Format": "JSON",
            "Version": "2018-06-12",
            "AccessKeyId": KEY_ID,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **params,
        }
        p["Signature"] = rpc_v1_signature(SECRET, "GET", p)
        target = "/?" + "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in p.items())
        started = time.perf_counter()
        self.conn.request("GET", target)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {body[:300]!r}")
        return elapsed, orjson.loads(body)

    def close(self) -> None:
        self.conn.close()


FILTERED = {
    "Action": "QueryConversations",
    "InstanceId": "demo",
    "PageNumber": "1",
    "PageSize": "10",
    "CallingNumber": TARGET,
    "BeginTimeLeftRange": str(END - 30 * DAY),
    "BeginTimeRightRange": str(END),
}
WINDOW = {
    "Action": "QueryConversations",
    "InstanceId": "demo",
    "PageNumber": "1",
    "PageSize": "10",
    "BeginTimeLeftRange": str(END - 3_600_000),
    "BeginTimeRightRange": str(END),
}


def measure(
    clients: dict[str, Rpc], params: dict[str, str], requests: int, rounds: int
) -> dict[str, tuple[list[float], int]]:
    """Per gateway: every request's seconds, and the TotalCount answered."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    totals: dict[str, int] = {}
    for client in clients.values():  # warm the page cache and the connection
        for _ in range(20):
            client.call(params)
    for _ in range(rounds):
        for name, client in clients.items():
            for _ in range(requests // rounds):
                elapsed, body = client.call(params)
                times[name].append(elapsed)
                totals[name] = int(body["TotalCount"])  # type: ignore[call-overload]
    return {name: (times[name], totals[name]) for name in clients}


def _line(label: str, results: dict[str, tuple[list[float], int]], large: str, small: str) -> float:
    medians = {name: statistics.median(t) * 1000 for name, (t, _) in results.items()}
    p90 = {name: statistics.quantiles(t, n=10)[-1] * 1000 for name, (t, _) in results.items()}
    ratio = medians[large] / medians[small]
    print(
        f"{label}: {large} median {medians[large]:.3f} ms (p90 {p90[large]:.3f}, TotalCount"
        f" {results[large][1]}), {small} median {medians[small]:.3f} ms (p90 {p90[small]:.3f},"
        f" TotalCount {results[small][1]}); ratio {ratio:.2f}x"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.query_scale")
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=600, help="per gateway and query")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    large, small = f"{args.large:,} conversations", f"{args.small:,} conversations"

    with tempfile.TemporaryDirectory(prefix="query-scale-") as tmp:
        root = Path(tmp)
        configs: dict[str, Path] = {}
        for name, n in ((large, args.large), (small, args.small)):
            directory = root / str(n)
            configs[name] = gwconfig.write(directory, port=0, auth=True)
            # Where the gateway will look for it, as it reads its config.
            seconds = build(load_settings(configs[name]).store.path, n)
            print(f"built {name} (+{TARGET_CALLS} for the target caller) in {seconds:.1f} s")
        with Servers(root, pin=can_pin()) as servers:
            started: dict[str, Server] = {}
            for name, config in configs.items():
                port = free_port()
                started[name] = servers.gateway(name.split()[0].replace(",", ""), config, port)
            clients = {name: Rpc(server.port) for name, server in started.items()}
            try:
                filtered = measure(clients, FILTERED, args.requests, args.rounds)
                window = measure(clients, WINDOW, args.requests // 2, args.rounds)
            finally:
                for client in clients.values():
                    client.close()
    print(f"QueryConversations, {args.requests} signed RPC requests per gateway, one connection")
    ratio = _line("caller + 30 days (the issue's query)", filtered, large, small)
    _line(
        "one-hour window, no caller (reference: its count grows with traffic)", window, large, small
    )
    print(f"ratio {ratio:.2f}x: {'within' if ratio <= 2 else 'OVER'} the 2x target")


if __name__ == "__main__":
    main()

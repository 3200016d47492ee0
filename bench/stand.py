"""The test stand: every server of a suite run, started once and pinned.

One gateway serves every front door (RPC with auth off, FreeSWITCH httapi,
the JSON webhook, websockets, Asterisk ARI through the fake) and two
instances: `demo`, answered by the built-in navigator and rules bot, and
`demobot`, its copy answered by the benchmark bot over the pooled HTTP
client. Beside it, on the same core, the baselines: the raw floor
(bench.bot_server serving the gateway's own RPC answer), a bare Starlette
route serving the same bytes (bench.servers) and nginx proxying to the bot
over a keep-alive upstream. The bot and the fake Asterisk share the
generator's core. Only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import ari_calls, gwconfig
from bench.ari_calls import BenchAsterisk
from bench.httapi_turn import PASSWORD as FS_PASSWORD
from bench.httapi_turn import USER as FS_USER
from bench.loadgen import fetch
from bench.nginx import keepalive_proxy, run_nginx
from bench.procs import LOADGEN_CPU, SERVER_CPU, Servers, free_port
from bench.rpc_turn import HOST
from bench.scripts import Script

BOT_INSTANCE = "demobot"
UVICORN = ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
UVICORN += ["--log-level", "warning"]


@dataclass
class Target:
    """One server under load: where it listens and which process to watch."""

    name: str
    port: int
    pid: int
    front: str  # rpc, httapi, webhook, websocket, asterisk
    instance: str = "demo"
    baseline: bool = False


@dataclass
class Stand:
    gateway: Target
    targets: dict[str, Target]
    fake: BenchAsterisk
    pinned: bool
    store_enabled: bool | None
    body: bytes
    pids: dict[str, int] = field(default_factory=dict)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def active_conversations(port: int) -> int:
    """Live conversations on the gateway, from its /metrics."""
    status, body = fetch(HOST, port, f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    if status != 200:
        return -1
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in body.decode().splitlines()
        if line.startswith("ivrgw_active_conversations{")
    )


def _capture(port: int, plays: tuple[Script, ...]) -> bytes:
    """The gateway's answer to a Dialogue turn, for the floor and Starlette to send."""
    from bench.fronts import PLACEHOLDER, Templates, call_id

    steps = Templates.build("rpc", port, plays, "demo").by_script[0]
    cid = call_id("capt", 0).encode()
    status, _ = fetch(HOST, port, steps[0].replace(PLACEHOLDER, cid))
    status2, body = fetch(HOST, port, steps[1].replace(PLACEHOLDER, cid))
    fetch(HOST, port, steps[-1].replace(PLACEHOLDER, cid))
    if status != 200 or status2 != 200 or b'"Action":"Broadcast"' not in body:
        raise RuntimeError(f"unexpected gateway answer: {status2} {body[:300]!r}")
    return body


@contextlib.contextmanager
def stand(tmp: Path, pin: bool, plays: tuple[Script, ...], log: object = None) -> Iterator[Stand]:
    """Start everything; stop everything started here on exit, errors included."""
    if pin:
        # The fake Asterisk's thread, started below, inherits this.
        os.sched_setaffinity(0, {LOADGEN_CPU})
    with contextlib.ExitStack() as stack:
        servers = stack.enter_context(Servers(tmp, pin))
        bot_port = free_port()
        bot = servers.start(
            "bot", ["-m", "bench.bot_server", str(bot_port)], bot_port, cpu=LOADGEN_CPU
        )
        bot.wait_ready("/")
        fake = BenchAsterisk()
        fake.start()
        stack.callback(fake.stop)

        port = free_port()
        config = gwconfig.write(tmp / "gateway", port=port, auth=False)
        adapters = {
            "freeswitch": gwconfig.freeswitch_adapter(FS_USER, FS_PASSWORD),
            "webhook": gwconfig.webhook_adapter(),
            "websocket": gwconfig.websocket_adapter(),
            "asterisk": gwconfig.asterisk_adapter(
                fake.port, ari_calls.USER, ari_calls.PASSWORD, ari_calls.APP, port, tmp / "tts"
            ),
        }
        bot_url = f"http://127.0.0.1:{bot_port}/bot"
        gwconfig.update(
            config,
            {
                "adapters": adapters,
                "bots": [gwconfig.webhook_bot(bot_url)],
                "breaker": {"failures": 1000},
            },
        )
        gwconfig.add_instance(config, BOT_INSTANCE, bot="bench")
        gwconfig.add_instance(config, ari_calls.INSTANCE, silence_timeout=ari_calls.SILENCE_S)
        gw = servers.gateway("gateway", config, port, ready="/healthz")
        fake.wait_connected(timeout=20)
        body = _capture(port, plays)
        body_file = tmp / "body.json"
        body_file.write_bytes(body)

        floor_port = free_port()
        floor = servers.start(
            "floor", ["-m", "bench.bot_server", str(floor_port), str(body_file)], floor_port
        )
        sl_port = free_port()
        starlette = servers.start(
            "starlette",
            [*UVICORN, "--host", HOST, "--port", str(sl_port), "bench.servers:app"],
            sl_port,
            env={"BENCH_BODY_FILE": str(body_file)},
        )
        http_body, server_body = keepalive_proxy(bot_port, 1024)
        ngx = stack.enter_context(
            run_nginx(server_body, http_body=http_body, cpu=SERVER_CPU if pin else None)
        )
        floor.wait_ready("/")
        starlette.wait_ready("/")

        gateway = Target("rpc", port, gw.pid, "rpc")
        targets = {
            "rpc": gateway,
            "httapi": Target("httapi", port, gw.pid, "httapi"),
            "websocket": Target("websocket", port, gw.pid, "websocket"),
            "webhook": Target("webhook", port, gw.pid, "webhook"),
            "asterisk": Target("asterisk", port, gw.pid, "asterisk"),
            "rpc-bot": Target("rpc-bot", port, gw.pid, "rpc", BOT_INSTANCE),
            "floor": Target("floor", floor_port, floor.pid, "rpc", baseline=True),
            "starlette": Target("starlette", sl_port, starlette.pid, "rpc", baseline=True),
            "nginx": Target("nginx", ngx.port, ngx.pid, "rpc", baseline=True),
            "bot": Target("bot", bot_port, bot.pid, "rpc", baseline=True),
        }
        yield Stand(
            gateway=gateway,
            targets=targets,
            fake=fake,
            pinned=pin,
            store_enabled=gwconfig.store_enabled(config),
            body=body,
            pids={
                "gateway": gw.pid,
                "floor": floor.pid,
                "starlette": starlette.pid,
                "nginx": ngx.pid,
                "bot": bot.pid,
            },
        )

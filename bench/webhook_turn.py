"""Measurement 2: the pooled-bot path, and the cost of a fallback turn.

Four servers, in interleaved rounds, each on the server core in turn:
- `nginx`: nginx reverse-proxying the Dialogue request, over a keep-alive
  upstream, to the benchmark bot (bench/bot_server.py);
- `gateway-webhook`: the gateway answering the same Dialogue request by
  asking the same bot as a webhook bot (unsigned RPC, auth off);
- `gateway-navigator`: the same turn answered by the built-in rules bot;
- `gateway-fallback`: the same turn on an instance whose bot's breaker is
  open, so every turn is the instance's fallback.

Reported, as medians over rounds of same-round ratios: webhook/nginx req/s
and p99, and the server CPU per turn of a fallback turn over a navigator
turn. The bot and the load generator share the other core.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench import gwconfig
from bench.loadgen import fetch, run_load
from bench.nginx import ensure_nginx, keepalive_proxy, run_nginx
from bench.procs import LOADGEN_CPU, SERVER_CPU, Server, Servers, can_pin, cpu_seconds, free_port
from bench.rpc_turn import HOST, Signer, _median, _summary, begin_all, conversation, turn_params

SERVERS = ("nginx", "gateway-webhook", "gateway-navigator", "gateway-fallback")
SLICE_WARMUP = 1.0
BOT_SECRET = gwconfig.BOT_SECRET


def _gateway(
    servers: Servers, tmp: Path, name: str, bot_url: str | None, breaker: dict[str, int]
) -> Server:
    port = free_port()
    config = gwconfig.write(tmp / name, port=port, auth=False)
    if bot_url is not None:
        gwconfig.update(config, {"breaker": breaker, "bots": [gwconfig.webhook_bot(bot_url)]})
        gwconfig.add_instance(config, "demo", bot="bench")
    return servers.gateway(name, config, port)


def _check(port: int, request: bytes, expect: str) -> bytes:
    status, body = fetch(HOST, port, request)
    if status != 200 or expect not in body.decode("utf-8"):
        raise RuntimeError(f"unexpected answer on port {port}: {status} {body[:300]!r}")
    return body


def run(duration: float, connections: int, rounds: int = 5, log: Any = print) -> dict[str, Any]:
    pin = can_pin()
    cpu = LOADGEN_CPU if pin else None
    slice_s = duration / rounds
    ensure_nginx()
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-hook-") as tmpdir,
        Servers(Path(tmpdir), pin) as servers,
    ):
        tmp = Path(tmpdir)
        bot_port = free_port()
        # The bot shares the generator's core: it serves nginx and the gateway alike.
        bot_args = ["-m", "bench.bot_server", str(bot_port)]
        bot = servers.start("bot", bot_args, bot_port, cpu=LOADGEN_CPU)
        bot.wait_ready("/")
        bot_url = f"http://127.0.0.1:{bot_port}/bot"
        webhook = _gateway(servers, tmp, "gateway-webhook", bot_url, {"failures": 1000})
        navigator = _gateway(servers, tmp, "gateway-navigator", None, {})
        dead = f"http://127.0.0.1:{free_port()}/bot"
        fallback = _gateway(
            servers, tmp, "gateway-fallback", dead, {"failures": 1, "reset_ms": 3_600_000}
        )
        nginx_port = free_port()
        http_body, server_body = keepalive_proxy(bot_port, connections)
        with run_nginx(
            server_body,
            http_body=http_body,
            port=nginx_port,
            cpu=SERVER_CPU if pin else None,
        ) as nginx:
            gateways = {
                "gateway-webhook": webhook,
                "gateway-navigator": navigator,
                "gateway-fallback": fallback,
            }
            ports = {"nginx": nginx.port, **{n: g.port for n, g in gateways.items()}}
            pids = {"nginx": nginx.pid, **{n: g.pid for n, g in gateways.items()}}
            requests: dict[str, list[list[bytes]]] = {}
            for name, port in ports.items():
                signer = Signer(port)
                if name in gateways:
                    begin_all(gateways[name], signer, connections)
                requests[name] = [
                    [signer.request(turn_params(conversation(i)))] * 200_000
                    for i in range(connections)
                ]
            _check(nginx.port, requests["nginx"][0][0], "100 yuan")
            _check(webhook.port, requests["gateway-webhook"][0][0], "100 yuan")
            _check(navigator.port, requests["gateway-navigator"][0][0], "余额为100元")
            # The first failure opens the breaker; every later turn is the fallback.
            _check(fallback.port, requests["gateway-fallback"][0][0], "TransferToAgent")
            _check(fallback.port, requests["gateway-fallback"][0][0], "TransferToAgent")
            for r in range(rounds):
                order = SERVERS[r % 4 :] + SERVERS[: r % 4]
                for name in order:
                    log(f"  round {r + 1}/{rounds}: {name} ...")
                    pid = pids[name]
                    stats = run_load(
                        HOST,
                        ports[name],
                        requests[name],
                        slice_s,
                        warmup=SLICE_WARMUP,
                        cpu=cpu,
                        server_cpu=lambda pid=pid: cpu_seconds(pid),
                    )
                    summary = _summary(stats)
                    cpu_frac = summary["server_cpu"] or 0.0
                    summary["cpu_us_per_turn"] = (
                        round(cpu_frac / stats.rps * 1e6, 2) if stats.rps else None
                    )
                    slices[name].append({**summary, "round": r + 1})

    def per_round(a: str, b: str, key: str) -> list[float]:
        return [
            round(x[key] / y[key], 3) for x, y in zip(slices[a], slices[b], strict=True) if y[key]
        ]

    rps_ratio = per_round("gateway-webhook", "nginx", "rps")
    p99_ratio = per_round("gateway-webhook", "nginx", "p99_ms")
    fallback_cost = per_round("gateway-fallback", "gateway-navigator", "cpu_us_per_turn")
    fallback_rps = per_round("gateway-navigator", "gateway-fallback", "rps")
    return {
        "connections": connections,
        "rounds": rounds,
        "slice_s": slice_s,
        "pinned": pin,
        "slices": slices,
        "summary": {
            name: {
                "rps_median": round(_median([x["rps"] for x in runs]), 1),
                "p50_ms_median": round(_median([x["p50_ms"] for x in runs]), 3),
                "p99_ms_median": round(_median([x["p99_ms"] for x in runs]), 3),
                "cpu_us_per_turn_median": _median([x["cpu_us_per_turn"] or 0 for x in runs]),
            }
            for name, runs in slices.items()
        },
        "webhook_over_nginx_rps": _median(rps_ratio),
        "webhook_over_nginx_p99": _median(p99_ratio),
        "fallback_over_navigator_cpu_per_turn": _median(fallback_cost),
        "navigator_over_fallback_rps": _median(fallback_rps),
        "ratios_per_round": {
            "webhook_rps": rps_ratio,
            "webhook_p99": p99_ratio,
            "fallback_cpu": fallback_cost,
        },
        "valid": all(
            not x["errors"] and not x["exhausted_connections"]
            for runs in slices.values()
            for x in runs
        ),
    }


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.webhook_turn")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per server")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.duration, args.connections, args.rounds)
    print(
        f"{'round':<7}{'server':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'srv cpu':>9}{'gen cpu':>9}{'µs/turn':>9}"
    )
    for name, runs in result["slices"].items():
        for x in runs:
            print(
                f"{x['round']:<7}{name:<20}{x['rps']:>9.0f}{x['p50_ms']:>9.2f}{x['p99_ms']:>9.2f}"
                f"{sum(x['errors'].values()):>8}{x['server_cpu'] or 0:>9.2f}"
                f"{x['generator_cpu']:>9.2f}{x['cpu_us_per_turn'] or 0:>9.1f}"
            )
    print(json.dumps({k: v for k, v in result.items() if k != "slices"}, indent=2))


if __name__ == "__main__":
    main()

"""Command line: `ivr-gateway serve` runs the gateway; `ivr-gateway url` signs a request URL.

`url` exists so a person with curl can call a gateway that has auth on:
it prints a fresh RPC v1 signed URL (new timestamp and nonce on every run)
for the parameters given as NAME=VALUE.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from gateway.errors import ConfigError
from gateway.net.signing import percent_encode, rpc_v1_signature
from gateway.settings import Settings, config_path, load_instances, load_settings


def _load(flag: str | None) -> tuple[Settings, list]:  # type: ignore[type-arg]
    settings = load_settings(config_path(flag))
    return settings, load_instances(settings.instances_dir, settings)


# Larger frames close the socket with 1009 before a handler sees them.
WS_MAX_MESSAGE = 1 << 20


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import logs
    from gateway.app import Gateway

    settings, instances = _load(args.config)
    logs.configure(settings.log_level)
    app = Gateway(settings, instances)
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
        loop="uvloop",
        http="httptools",
        # The sans-I/O websockets protocol: it offers the `websocket.http.response`
        # extension (401 before an upgrade). Frames up to WS_MAX_MESSAGE reach the
        # handlers, which apply their own, smaller caps with an error frame.
        ws="websockets-sansio",
        ws_max_size=WS_MAX_MESSAGE,
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
    )
    return 0


def signed_url(settings: Settings, host: str, port: int, pairs: Sequence[str]) -> str:
    params: dict[str, str] = {"Format": "JSON", "Version": "2018-06-12"}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        params[name] = value
    base = f"http://{host}:{port}/"
    if not settings.auth_enabled:
        return base + "?" + urlencode(params, quote_via=quote)
    key = next((k for k in settings.access_keys if k.policy == "full"), settings.access_keys[0])
    params.update(
        AccessKeyId=key.id,
        SignatureMethod="HMAC-SHA1",
        SignatureVersion="1.0",
        SignatureNonce=uuid.uuid4().hex,
        Timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    params["Signature"] = rpc_v1_signature(key.secret, "GET", params)
    return (
        base + "?" + "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items())
    )


def url(args: argparse.Namespace) -> int:
    settings, _ = _load(args.config)
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(signed_url(settings, host, settings.port, args.params))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivr-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument(
        "--config", help="gateway.toml (default: $GATEWAY_CONFIG or config/gateway.toml)"
    )
    p.add_argument("--host", help="listen address (default: server.host)")
    p.add_argument("--port", type=int, help="listen port (default: server.port)")
    p.set_defaults(func=serve)

    u = sub.add_parser("url", help="print a signed RPC URL for NAME=VALUE parameters")
    u.add_argument(
        "--config", help="gateway.toml (default: $GATEWAY_CONFIG or config/gateway.toml)"
    )
    u.add_argument("params", nargs="+", metavar="NAME=VALUE")
    u.set_defaults(func=url)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"ivr-gateway: invalid config: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""A temporary gateway config for benchmarks, derived from the repository's.

`config/gateway.toml` is read (so its sessions, limits and auth settings
apply) and written back with the benchmark's overrides; the demo instance is
copied with `Concurrency` raised to the maximum.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from bench import ROOT

SOURCE_CONFIG = ROOT / "config" / "gateway.toml"
SOURCE_INSTANCE = ROOT / "config" / "instances" / "demo.toml"
DEMO_KEY = {"id": "demo-key", "secret": "demo-secret", "policy": "full", "user": "demo"}
MAX_CONCURRENCY = 100_000
BEARER = "bench-bearer-token-0123456789"  # the webhook's and the websocket's token
BOT_SECRET = "bench-webhook-secret-0123456789"

_CONCURRENCY = re.compile(r"^Concurrency\s*=.*$", re.MULTILINE)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(v, list) and not any(isinstance(x, dict) for x in v):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as a TOML value")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(name: str, data: dict[str, Any], header: str, out: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if header:
        out.append(header)
    out.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in scalars.items())
    out.append("")
    for k, v in data.items():
        path = f"{name}.{json.dumps(k)}" if name else json.dumps(k)
        if isinstance(v, dict):
            _table(path, v, f"[{path}]", out)
        elif _is_table_array(v):
            for item in v:
                _table(path, item, f"[[{path}]]", out)


def dumps(data: dict[str, Any]) -> str:
    """TOML for plain tables, arrays of tables and scalar values (enough for gateway.toml)."""
    out: list[str] = []
    _table("", data, "", out)
    return "\n".join(out)


def write(directory: Path, *, port: int, auth: bool) -> Path:
    """Write `gateway.toml` and `instances/demo.toml` under `directory`; return the former."""
    directory.mkdir(parents=True, exist_ok=True)
    instances = (directory / "instances").resolve()
    instances.mkdir(exist_ok=True)

    demo = SOURCE_INSTANCE.read_text(encoding="utf-8")
    line = f"Concurrency = {MAX_CONCURRENCY}"
    demo, n = _CONCURRENCY.subn(line, demo, count=1)
    if n == 0:
        demo = f"{line}\n{demo}"  # top-level keys go before the first table
    if tomllib.loads(demo).get("Concurrency") != MAX_CONCURRENCY:
        raise RuntimeError(f"could not set Concurrency in a copy of {SOURCE_INSTANCE}")
    (instances / "demo.toml").write_text(demo, encoding="utf-8")

    with SOURCE_CONFIG.open("rb") as f:
        data = tomllib.load(f)
    data.setdefault("server", {}).update(host="127.0.0.1", port=port, log_level="warning")
    data.setdefault("auth", {})["enabled"] = auth
    data["access_keys"] = [dict(DEMO_KEY)]
    data.setdefault("instances", {})["dir"] = str(instances)
    # Each benchmark gateway has its own database and outbox, in its directory.
    var = (directory / "var").resolve()
    data.setdefault("store", {}).update(
        path=str(var / "gateway.db"), exports_dir=str(var / "exports")
    )
    data.setdefault("outbox", {})["path"] = str(var / "outbox.db")
    path = directory / "gateway.toml"
    path.write_text(dumps(data), encoding="utf-8")
    return path


def update(path: Path, tables: dict[str, Any]) -> None:
    """Replace top-level tables of the config at `path` (e.g. `adapters`, `bots`)."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    data.update(tables)
    path.write_text(dumps(data), encoding="utf-8")


def add_instance(
    config: Path, instance: str, *, bot: str | None = None, silence_timeout: int | None = None
) -> None:
    """A copy of the demo instance named `instance`: answered by the bot named `bot`,
    and with its own silence timeout (seconds), when given."""
    instances = config.parent / "instances"
    line = f'InstanceId = "{instance}"' + (f'\nChatbot = "{bot}"' if bot else "")
    text, n = re.subn(
        r'^InstanceId = "demo"$',
        line,
        (instances / "demo.toml").read_text(encoding="utf-8"),
        count=1,
        flags=re.M,
    )
    if silence_timeout is not None:
        text, m = re.subn(
            r"^(\[SilenceTimeoutConfig\](?:\n[^\[].*)*?\nTimeout = )\d+$",
            rf"\g<1>{silence_timeout}",
            text,
            count=1,
            flags=re.M,
        )
        n += m - 1
    if n != 1:
        raise RuntimeError(f"could not derive {instance} from the demo instance")
    (instances / f"{instance}.toml").write_text(text, encoding="utf-8")


def webhook_bot(url: str, name: str = "bench") -> dict[str, Any]:
    """A `[[bots]]` entry: the benchmark bot, asked as a webhook bot."""
    return {"name": name, "kind": "webhook", "url": url, "secret": BOT_SECRET}


def freeswitch_adapter(user: str, password: str) -> dict[str, Any]:
    return {"enabled": True, "username": user, "password": password, "default_instance": "demo"}


def websocket_adapter() -> dict[str, Any]:
    # The default rate (1,000 frames/s per socket) would cap a benchmark socket.
    return {
        "enabled": True,
        "tokens": [BEARER],
        "default_instance": "demo",
        "rate": 1_000_000,
        "burst": 1_000_000,
    }


def webhook_adapter() -> dict[str, Any]:
    return {"enabled": True, "tokens": [BEARER], "default_instance": "demo"}


def asterisk_adapter(
    ari_port: int, user: str, password: str, app: str, gateway_port: int, tts_dir: Path
) -> dict[str, Any]:
    return {
        "enabled": True,
        "url": f"http://127.0.0.1:{ari_port}",
        "username": user,
        "password": password,
        "app": app,
        "default_instance": "demo",
        "media_url": f"http://127.0.0.1:{gateway_port}/media/",
        "tts_cache_dir": str(tts_dir),
        "inter_digit_ms": 2000,
    }


def store_enabled(config: Path) -> bool | None:
    """`[store] enabled` as the gateway will read it (None: this gateway has no store)."""
    from gateway.settings import load_settings

    settings = load_settings(config)
    store = getattr(settings, "store", None)
    return None if store is None else bool(store.enabled)

"""Loading `gateway.toml` and the instance files, once, at start-up.

Invalid config fails here with a `ConfigError` naming the file, the key and
what is wrong; nothing is checked again per request. Relative paths in
gateway.toml are relative to the file itself.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.api.auth import AccessKey, Policy
from gateway.bots.llm import LlmConfig
from gateway.bots.webhook import WebhookConfig
from gateway.calls.mount import ADAPTERS
from gateway.dialogue.config import ConfigProblem, Reader
from gateway.errors import ConfigError
from gateway.services.remote import RemoteConfig
from gateway.store.instances import Instance, parse_instance

DEFAULT_CONFIG = "config/gateway.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")
BOT_KINDS = ("webhook", "llm")
BotConfig = WebhookConfig | LlmConfig


@dataclass(frozen=True, slots=True)
class PoolSettings:
    max_connections: int = 64
    acquire_timeout: float = 1.0
    connect_timeout: float = 2.0
    idle_timeout: float = 30.0
    max_body_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int = 5
    reset_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    path: Path
    retry_base: float = 0.5
    retry_max: float = 60.0
    max_age: float = 86_400.0


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """`[store]`: the SQLite database of instances and conversation records (docs/storage.md)."""

    path: Path
    # Off: instances come from the instance files on every start, nothing is
    # recorded, and the management and query actions answer StoreDisabled.
    enabled: bool = True
    queue_size: int = 50_000
    batch_max: int = 500
    batch_ms: float = 50.0
    read_threads: int = 2
    # The writer thread runs under SCHED_IDLE: a turn always preempts it.
    # Off: it runs at `writer_nice` (19, the lowest, lets turns come first).
    writer_idle: bool = True
    writer_nice: int = 19
    # CSV exports and TTS auditions are written here and served under
    # expiring signed links (gateway.api.links) for `link_ttl` seconds.
    exports_dir: Path = Path("var/exports")
    link_ttl: int = 3_600


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    host: str
    port: int
    log_level: str
    auth_enabled: bool
    timestamp_window: int
    max_nonces: int
    access_keys: tuple[AccessKey, ...]
    idle_timeout: int
    sweep_interval: int
    max_body_bytes: int
    instances_dir: Path
    pool: PoolSettings
    breaker: BreakerSettings
    outbox: OutboxSettings
    idempotent_turns: int
    store: StoreSettings
    # Links in API answers (exports, auditions) start with this; "" means
    # the scheme and Host the request came in with.
    public_url: str = ""
    bots: tuple[BotConfig, ...] = ()
    remotes: tuple[RemoteConfig, ...] = ()
    # Enabled adapters: (name, its [adapters.<name>] table), validated when mounted.
    adapters: tuple[tuple[str, dict[str, Any]], ...] = ()

    def __repr__(self) -> str:
        keys = [k.id for k in self.access_keys]
        where = f"{self.host}:{self.port}"
        return f"Settings(path={str(self.path)!r}, {where}, auth={self.auth_enabled}, keys={keys})"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "-", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "-", f"not valid TOML: {exc}") from None


def config_path(flag: str | None) -> Path:
    """The config file: the --config flag, else $GATEWAY_CONFIG, else the default."""
    return Path(flag or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: Path) -> Settings:
    data = _read_toml(path)
    try:
        return _parse_settings(path, data)
    except ConfigProblem as exc:
        raise ConfigError(str(path), exc.key, exc.problem) from None


def _parse_settings(path: Path, data: dict[str, Any]) -> Settings:
    root = Reader(data, "")
    server = root.table("server", required=False)
    log_level = server.text("log_level", "info", max_len=16).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigProblem("server.log_level", f"must be one of {', '.join(LOG_LEVELS)}")

    auth = root.table("auth", required=False)
    auth_enabled = auth.boolean("enabled", True)

    keys: list[AccessKey] = []
    raw_keys = data.get("access_keys", [])
    if not isinstance(raw_keys, list):
        raise ConfigProblem("access_keys", "must be an array of tables ([[access_keys]])")
    seen: set[str] = set()
    for n, raw in enumerate(raw_keys):
        if not isinstance(raw, dict):
            raise ConfigProblem(f"access_keys[{n}]", "must be a table")
        k = Reader(raw, f"access_keys[{n}]")
        key_id = k.text("id", max_len=128)
        secret = k.text("secret", max_len=256)
        if not key_id or not secret:
            raise ConfigProblem(f"access_keys[{n}]", "id and secret must not be empty")
        if key_id in seen:
            raise ConfigProblem(f"access_keys[{n}].id", f"duplicate access key id {key_id!r}")
        seen.add(key_id)
        policy = k.text("policy", "full", max_len=16)
        if policy not in ("full", "read-only"):
            raise ConfigProblem(f"access_keys[{n}].policy", "must be full or read-only")
        policy_value: Policy = "full" if policy == "full" else "read-only"
        keys.append(AccessKey(key_id, secret, policy_value, k.text("user", key_id, max_len=128)))
    if auth_enabled and not keys:
        raise ConfigProblem(
            "access_keys", "auth is enabled but no key is configured (or set auth.enabled = false)"
        )

    sessions = root.table("sessions", required=False)
    limits = root.table("limits", required=False)
    instances = root.table("instances", required=False)
    instances_dir = Path(instances.text("dir", "instances", max_len=4096))
    if not instances_dir.is_absolute():
        instances_dir = path.parent / instances_dir

    p = root.table("pool", required=False)
    pool = PoolSettings(
        max_connections=p.integer("max_connections", 1, 10_000, 64),
        acquire_timeout=p.integer("acquire_timeout_ms", 1, 60_000, 1_000) / 1000,
        connect_timeout=p.integer("connect_timeout_ms", 1, 60_000, 2_000) / 1000,
        idle_timeout=p.integer("idle_timeout_seconds", 1, 3_600, 30),
        max_body_bytes=p.integer("max_body_bytes", 1_024, 64 * 1_048_576, 1_048_576),
    )
    b = root.table("breaker", required=False)
    breaker = BreakerSettings(
        failures=b.integer("failures", 1, 1_000, 5),
        reset_seconds=b.integer("reset_ms", 10, 3_600_000, 10_000) / 1000,
    )
    o = root.table("outbox", required=False)
    outbox_path = Path(o.text("path", "var/outbox.db", max_len=4096))
    if not outbox_path.is_absolute():
        outbox_path = path.parent / outbox_path
    outbox = OutboxSettings(
        path=outbox_path,
        retry_base=o.integer("retry_base_ms", 1, 60_000, 500) / 1000,
        retry_max=o.integer("retry_max_seconds", 1, 86_400, 60),
        max_age=o.integer("max_age_seconds", 60, 30 * 86_400, 86_400),
    )
    idempotency = root.table("idempotency", required=False)
    st = root.table("store", required=False)
    store = StoreSettings(
        path=_relative(path, st.text("path", "var/gateway.db", max_len=4096)),
        enabled=st.boolean("enabled", True),
        queue_size=st.integer("queue_size", 100, 10_000_000, 50_000),
        batch_max=st.integer("batch_max", 1, 100_000, 500),
        batch_ms=float(st.integer("batch_ms", 0, 10_000, 50)),
        read_threads=st.integer("read_threads", 1, 64, 2),
        writer_idle=st.boolean("writer_idle", True),
        writer_nice=st.integer("writer_nice", 0, 19, 19),
        exports_dir=_relative(path, st.text("exports_dir", "var/exports", max_len=4096)),
        link_ttl=st.integer("link_ttl_seconds", 10, 7 * 86_400, 3_600),
    )

    bots: list[BotConfig] = []
    for n, table in enumerate(_tables(data, "bots")):
        where = f"bots[{n}]"
        kind = Reader(table, where).text("kind", max_len=16)
        if kind == "webhook":
            bots.append(WebhookConfig.from_table(table, where))
        elif kind == "llm":
            bots.append(LlmConfig.from_table(table, where))
        else:
            raise ConfigProblem(f"{where}.kind", f"must be one of {', '.join(BOT_KINDS)}")
    remotes = [
        RemoteConfig.from_table(table, f"remotes[{n}]")
        for n, table in enumerate(_tables(data, "remotes"))
    ]
    adapters: list[tuple[str, dict[str, Any]]] = []
    for name, table in root.table("adapters", required=False).data.items():
        if name not in ADAPTERS:
            raise ConfigProblem(
                f"adapters.{name}", f"unknown adapter (known: {', '.join(ADAPTERS)})"
            )
        if not isinstance(table, dict):
            raise ConfigProblem(f"adapters.{name}", "must be a table")
        if Reader(table, f"adapters.{name}").boolean("enabled", False):
            adapters.append((name, table))
    for what, named in (("bots", bots), ("remotes", remotes)):
        names = [x.name for x in named]
        for n, name in enumerate(names):
            if not name or name == "rules":
                raise ConfigProblem(f"{what}[{n}].name", "must be set, and not 'rules'")
            if name in names[:n]:
                raise ConfigProblem(f"{what}[{n}].name", f"duplicate name {name!r}")

    return Settings(
        path=path,
        host=server.text("host", "127.0.0.1", max_len=255),
        port=server.integer("port", 0, 65535, 8080),
        log_level=log_level,
        auth_enabled=auth_enabled,
        timestamp_window=auth.integer("timestamp_window_seconds", 1, 86_400, 900),
        max_nonces=auth.integer("max_nonces", 1_000, 100_000_000, 1_000_000),
        access_keys=tuple(keys),
        idle_timeout=sessions.integer("idle_timeout_seconds", 1, 7 * 86_400, 3_600),
        sweep_interval=sessions.integer("sweep_interval_seconds", 1, 3_600, 30),
        max_body_bytes=limits.integer("max_body_bytes", 1_024, 16 * 1_048_576, 65_536),
        instances_dir=instances_dir,
        pool=pool,
        breaker=breaker,
        outbox=outbox,
        idempotent_turns=idempotency.integer("max_turns", 1_000, 10_000_000, 100_000),
        store=store,
        public_url=server.text("public_url", "", max_len=512).rstrip("/"),
        bots=tuple(bots),
        remotes=tuple(remotes),
        adapters=tuple(adapters),
    )


def _relative(config: Path, value: str) -> Path:
    """A path from gateway.toml: relative paths are relative to the file."""
    p = Path(value)
    return p if p.is_absolute() else config.parent / p


def _tables(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    raw = data.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigProblem(name, f"must be an array of tables ([[{name}]])")
    return raw


def load_instances(directory: Path, settings: Settings | None = None) -> list[Instance]:
    """Every `*.toml` in `directory`, in name order; InstanceIds must be unique.

    With `settings`, the bot and remote each instance names must be configured.
    """
    if not directory.is_dir():
        raise ConfigError(str(directory), "instances.dir", "not a directory")
    instances: list[Instance] = []
    where: dict[str, Path] = {}
    for file in sorted(directory.glob("*.toml")):
        data = _read_toml(file)
        try:
            instance = parse_instance(data)
        except ConfigProblem as exc:
            raise ConfigError(str(file), exc.key, exc.problem) from None
        if settings is not None:
            bots = {b.name for b in settings.bots}
            remotes = {r.name for r in settings.remotes}
            if instance.chatbot and instance.chatbot not in bots:
                problem = f"no [[bots]] entry named {instance.chatbot!r} in {settings.path}"
                raise ConfigError(str(file), "Chatbot", problem)
            if instance.remote and instance.remote not in remotes:
                problem = f"no [[remotes]] entry named {instance.remote!r} in {settings.path}"
                raise ConfigError(str(file), "remote.name", problem)
        other = where.get(instance.instance_id)
        if other is not None:
            problem = f"duplicate InstanceId {instance.instance_id!r} (also in {other})"
            raise ConfigError(str(file), "InstanceId", problem)
        where[instance.instance_id] = file
        instances.append(instance)
    return instances

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
from gateway.dialogue.config import ConfigProblem, Reader
from gateway.errors import ConfigError
from gateway.store.instances import Instance, parse_instance

DEFAULT_CONFIG = "config/gateway.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    )


def load_instances(directory: Path) -> list[Instance]:
    """Every `*.toml` in `directory`, in name order; InstanceIds must be unique."""
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
        other = where.get(instance.instance_id)
        if other is not None:
            problem = f"duplicate InstanceId {instance.instance_id!r} (also in {other})"
            raise ConfigError(str(file), "InstanceId", problem)
        where[instance.instance_id] = file
        instances.append(instance)
    return instances

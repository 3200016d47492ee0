"""How adapters are mounted: what the gateway gives them, what they give back.

`gateway.app` never imports an adapter by name in code: settings list the
enabled adapters, and each one's module path comes from `ADAPTERS`, resolved
once at start-up. A module exposes `mount(context, table, where) -> Mounted`;
it validates its own `[adapters.<name>]` table and raises
`gateway.dialogue.config.ConfigProblem` naming the key.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

from gateway.asgi import ASGIApp
from gateway.calls.bridge import Bridge
from gateway.metrics import Metrics
from gateway.store.instances import InstanceRegistry

ADAPTERS: Mapping[str, str] = {
    "freeswitch": "adapters.freeswitch.transport:mount",
    "webhook": "adapters.webhook.transport:mount",
}


class AdapterContext(NamedTuple):
    bridge: Bridge
    instances: InstanceRegistry
    metrics: Metrics
    # Relative paths in an adapter's table are relative to this (gateway.toml's directory).
    base_dir: Path


class Mounted(NamedTuple):
    # Exact paths, and path prefixes (a prefix ends with "/").
    paths: Mapping[str, ASGIApp]
    prefixes: Mapping[str, ASGIApp] = {}


Mount = Callable[[AdapterContext, Mapping[str, Any], str], Mounted]


def resolve(name: str) -> Mount:
    module, _, attr = ADAPTERS[name].partition(":")
    return cast(Mount, getattr(importlib.import_module(module), attr))

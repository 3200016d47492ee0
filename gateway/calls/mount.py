"""How adapters are mounted: what the gateway gives them, what they give back.

`gateway.app` never imports an adapter by name in code: settings list the
enabled adapters, and each one's module path comes from `ADAPTERS`, resolved
once at start-up. A module exposes `mount(context, table, where) -> Mounted`;
it validates its own `[adapters.<name>]` table and raises
`gateway.dialogue.config.ConfigProblem` naming the key.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

from gateway.api.auth import Authenticator
from gateway.api.links import Links
from gateway.asgi import ASGIApp
from gateway.calls.bridge import Bridge
from gateway.calls.events import CallEvent
from gateway.calls.monitor import Monitor
from gateway.dialogue.operations import Reply
from gateway.metrics import Metrics
from gateway.net.http import HttpClient
from gateway.store.instances import InstanceRegistry
from gateway.store.recorder import Recorder

# A live call that another front door may feed an event to (a recognised
# utterance for an Asterisk channel, arriving over the JSON webhook). It runs
# the turn in the call's own order and returns the reply it acted on.
LiveCall = Callable[[CallEvent], Awaitable[Reply | None]]

ADAPTERS: Mapping[str, str] = {
    "freeswitch": "adapters.freeswitch.transport:mount",
    "webhook": "adapters.webhook.transport:mount",
    "asterisk": "adapters.asterisk.transport:mount",
    "websocket": "adapters.websocket.transport:mount",
}


class AdapterContext(NamedTuple):
    bridge: Bridge
    instances: InstanceRegistry
    metrics: Metrics
    # Relative paths in an adapter's table are relative to this (gateway.toml's directory).
    base_dir: Path
    # The gateway's pooled HTTP client (REST calls to a switch go through it).
    http: HttpClient
    # Live calls by call id, across adapters (see LiveCall).
    live: MutableMapping[str, LiveCall]
    # The RPC API's access keys and nonces (None with [auth] off), for signed upgrades.
    auth: Authenticator | None
    # The live turn stream (the bridge publishes to it; an adapter may too).
    monitor: Monitor
    # Conversation records (None: [store] off). An adapter that saves a call's
    # recording reports it with `recorder.recording(...)`, after registering
    # its directory with `links.add_root(kind, dir)` so DescribeRecording can
    # hand out a signed link to it.
    recorder: Recorder | None
    links: Links


class Mounted(NamedTuple):
    # Exact paths, and path prefixes (a prefix ends with "/").
    paths: Mapping[str, ASGIApp]
    prefixes: Mapping[str, ASGIApp] = {}
    # Websocket endpoints by exact path.
    websockets: Mapping[str, ASGIApp] = {}
    # Run at start-up and shutdown (a switch connection); must not block long.
    startup: Sequence[Callable[[], Awaitable[None]]] = ()
    shutdown: Sequence[Callable[[], Awaitable[None]]] = ()
    # Readiness checks by name, for /readyz (a switch connection is up).
    ready: Mapping[str, Callable[[], bool]] = {}


Mount = Callable[[AdapterContext, Mapping[str, Any], str], Mounted]


def resolve(name: str) -> Mount:
    module, _, attr = ADAPTERS[name].partition(":")
    return cast(Mount, getattr(importlib.import_module(module), attr))

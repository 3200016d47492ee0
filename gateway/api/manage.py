"""Management actions of the RPC API: everything besides the dialogue turns.

Each handler takes the decoded parameters and the `Request` (the caller's
access key, the base URL links are made with) and returns the response
fields besides RequestId, or an awaitable of them (handlers that write the
store await the writer thread; those that read await the store's readers).
Changes swap immutable values in memory, so live conversations keep the
instance they began with.

The actions live in modules listed in `MODULES`, each with an
`actions(context) -> dict[str, Handler]` function, resolved once at
start-up: instances and bots (gateway.api.instances), navigation and TTS
config (gateway.api.navigation), conversations, statistics, exports and
recordings (gateway.api.conversations ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import errors
from gateway.api.actions import Params
from gateway.api.auth import AccessKey
from gateway.api.links import Links
from gateway.dialogue.bot import AsyncBot
from gateway.store.instances import InstanceRegistry
from gateway.store.store import Store

if TYPE_CHECKING:
    from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Request:
    """Who calls a management action, and where the gateway is reached."""

    key: AccessKey | None
    # `http://host:port` as the caller reached the gateway (its Host header),
    # or `[server] public_url`: links in answers start with it.
    base_url: str = "http://127.0.0.1"

    @property
    def user(self) -> str:
        """ModifyUserName: the access key's `user` (auth off: "anonymous")."""
        return self.key.user if self.key is not None else "anonymous"


Fields = dict[str, Any]
Handler = Callable[[Params, Request], Fields | Awaitable[Fields]]


@dataclass(frozen=True, slots=True)
class Context:
    """What management actions work on, built once by the gateway."""

    instances: InstanceRegistry
    bots: Mapping[str, AsyncBot]
    # None: [store] enabled = false (see `need_store`).
    store: Store | None
    links: Links
    settings: Settings | None = None

    def need_store(self) -> Store:
        if self.store is None:
            raise errors.StoreDisabled()
        return self.store


# "module" with an `actions(context)` function, in registration order.
MODULES: tuple[str, ...] = (
    "gateway.api.instances",
    "gateway.api.navigation",
    "gateway.api.conversations",
    "gateway.api.statistics",
    "gateway.api.exports",
)


class ManagementApi:
    def __init__(self, context: Context, modules: tuple[str, ...] = MODULES) -> None:
        self.context = context
        self.actions: dict[str, Handler] = {}
        for name in modules:
            made: dict[str, Handler] = importlib.import_module(name).actions(context)
            taken = self.actions.keys() & made.keys()
            if taken:
                raise RuntimeError(f"{name} registers actions already taken: {sorted(taken)}")
            self.actions.update(made)

    def __repr__(self) -> str:
        return f"ManagementApi(actions={sorted(self.actions)})"

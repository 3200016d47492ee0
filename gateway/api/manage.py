"""Management actions of the RPC API that change an instance at run time.

Each handler takes the decoded parameters and the `Request` (the caller's
access key, the base URL links are made with) and returns the response
fields besides RequestId, or an awaitable of them (handlers that write the
store await the writer thread; those that read await the store's readers).
Changes swap immutable values in memory, so live conversations keep the
instance they began with.

AssociateChatbotInstance (seed §8.1) binds an instance to a bot configured in
gateway.toml (`[[bots]]`): ChatbotInstanceId is the bot's `name`; the name
`rules` binds the instance's own embedded rules bot again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, Params, optional, required
from gateway.api.auth import AccessKey
from gateway.api.links import Links
from gateway.dialogue.bot import AsyncBot
from gateway.store.instances import InstanceRegistry
from gateway.store.store import Store


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
EMBEDDED = "rules"


class ChatbotNotFound(errors.GatewayError):
    code = "InvalidChatbotInstanceId.NotFound"
    status = 404
    default_message = "The specified ChatbotInstanceId is not a configured bot."


class ManagementApi:
    def __init__(
        self,
        instances: InstanceRegistry,
        bots: Mapping[str, AsyncBot],
        store: Store | None = None,
        links: Links | None = None,
    ) -> None:
        self.instances = instances
        self.bots = bots
        # None: [store] enabled = false; the actions that need it answer StoreDisabled.
        self.store = store
        self.links = links
        self.actions: dict[str, Handler] = {
            "AssociateChatbotInstance": self.associate_chatbot_instance,
        }

    def associate_chatbot_instance(self, params: Params, request: Request) -> Fields:
        instance_id = required(params, "InstanceId", MAX_ID_CHARS)
        name = required(params, "ChatbotInstanceId", MAX_ID_CHARS)
        optional(params, "ChatbotName", MAX_ID_CHARS)
        instance = self.instances.get(instance_id)
        if instance is None:
            raise errors.InstanceNotFound()
        if name == EMBEDDED:
            bot = None
            name = ""
        else:
            bot = self.bots.get(name)
            if bot is None:
                raise ChatbotNotFound(
                    f"No bot named {name!r} is configured; configured: "
                    f"{', '.join(sorted(self.bots)) or 'none'} (or {EMBEDDED!r})."
                )
        self.instances.put(dataclasses.replace(instance, chatbot=name, async_bot=bot))
        return {}

    def __repr__(self) -> str:
        return f"ManagementApi(actions={sorted(self.actions)})"

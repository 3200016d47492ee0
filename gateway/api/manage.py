"""Management actions of the RPC API that change an instance at run time.

Each handler takes the decoded parameters and the caller's access key and
returns the response fields besides RequestId. Handlers are synchronous:
they swap immutable values in memory, so live conversations keep the
instance they began with.

AssociateChatbotInstance (seed §8.1) binds an instance to a bot configured in
gateway.toml (`[[bots]]`): ChatbotInstanceId is the bot's `name`; the name
`rules` binds the instance's own embedded rules bot again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, Params, optional, required
from gateway.api.auth import AccessKey
from gateway.dialogue.bot import AsyncBot
from gateway.store.instances import InstanceRegistry

Handler = Callable[[Params, AccessKey | None], dict[str, Any]]
EMBEDDED = "rules"


class ChatbotNotFound(errors.GatewayError):
    code = "InvalidChatbotInstanceId.NotFound"
    status = 404
    default_message = "The specified ChatbotInstanceId is not a configured bot."


class ManagementApi:
    def __init__(self, instances: InstanceRegistry, bots: Mapping[str, AsyncBot]) -> None:
        self.instances = instances
        self.bots = bots
        self.actions: dict[str, Handler] = {
            "AssociateChatbotInstance": self.associate_chatbot_instance,
        }

    def associate_chatbot_instance(self, params: Params, key: AccessKey | None) -> dict[str, Any]:
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

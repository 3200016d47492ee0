"""Instance actions: AssociateChatbotInstance (seed §8.1).

AssociateChatbotInstance binds an instance to a bot configured in
gateway.toml (`[[bots]]`): ChatbotInstanceId is the bot's `name`; the name
`rules` binds the instance's own embedded rules bot again.
"""

from __future__ import annotations

import dataclasses

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, Params, optional, required
from gateway.api.manage import Context, Fields, Handler, Request

EMBEDDED = "rules"


class ChatbotNotFound(errors.GatewayError):
    code = "InvalidChatbotInstanceId.NotFound"
    status = 404
    default_message = "The specified ChatbotInstanceId is not a configured bot."


def actions(context: Context) -> dict[str, Handler]:
    def associate_chatbot_instance(params: Params, request: Request) -> Fields:
        instance_id = required(params, "InstanceId", MAX_ID_CHARS)
        name = required(params, "ChatbotInstanceId", MAX_ID_CHARS)
        optional(params, "ChatbotName", MAX_ID_CHARS)
        instance = context.instances.get(instance_id)
        if instance is None:
            raise errors.InstanceNotFound()
        if name == EMBEDDED:
            bot = None
            name = ""
        else:
            bot = context.bots.get(name)
            if bot is None:
                raise ChatbotNotFound(
                    f"No bot named {name!r} is configured; configured: "
                    f"{', '.join(sorted(context.bots)) or 'none'} (or {EMBEDDED!r})."
                )
        context.instances.put(dataclasses.replace(instance, chatbot=name, async_bot=bot))
        return {}

    return {"AssociateChatbotInstance": associate_chatbot_instance}

"""Instance actions (seed §7, §8.1): create, describe, list, modify, enable,
disable and delete instances, and bind one to a bot.

Every change goes through the Editor (gateway.api.editing): validated as
an instance file is, written to the database, then served. Describe and
List read the database (ModifyTime and ModifyUserName live there). The
fields and errors are in docs/management.md.

AssociateChatbotInstance binds an instance to a bot configured in
gateway.toml (`[[bots]]`): ChatbotInstanceId is the bot's `name`; the name
`rules` binds the instance's own embedded rules bot again. The binding is
the document's `Chatbot` key, so it survives a restart.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, Params, optional, page, required
from gateway.api.editing import Document, editor_of
from gateway.api.manage import Context, Fields, Handler, Request
from gateway.store import catalog
from gateway.store.catalog import StoredInstance
from gateway.store.instances import MAX_CONCURRENCY

EMBEDDED = "rules"
MAX_NAME_CHARS = 128
MAX_DESCRIPTION_CHARS = 1000

# ApplicableOperations by Status: what the instance accepts next. "Edit" is
# ModifyInstance and the Modify*Config actions, "Enable" EnableInstance,
# "Disable" DisableInstance, "Delete" DeleteInstance.
APPLICABLE_OPERATIONS: Mapping[str, tuple[str, ...]] = {
    "Published": ("Edit", "Disable", "Delete"),
    "Disabled": ("Edit", "Enable", "Delete"),
}

# A new instance's navigation config (CreateInstance): a generic bilingual
# greeting, three tries before an agent, a way to ask for one, no asking
# back, and the embedded rules bot with no intents (every utterance is
# unrecognised until AssociateChatbotInstance binds a bot or the config is
# changed). docs/management.md shows it.
DEFAULT_NAVIGATION: Mapping[str, Any] = {
    "GreetingConfig": {
        "SourceType": "fixed",
        "GreetingWords": "您好，请问有什么可以帮您？Hello, how can I help you?",
    },
    "UnrecognizingConfig": {
        "Prompt": "抱歉，我没有理解您的意思，请换个说法。"
        "Sorry, I did not understand. Please say it another way.",
        "Threshold": 3,
        "FinalPrompt": "抱歉，我暂时无法处理您的问题，即将为您转接人工。"
        "Sorry, I cannot help with that. Transferring you to an agent.",
        "FinalAction": "TransferToAgent",
        "FinalActionParams": "{}",
    },
    "RepeatingConfig": {"Utterances": ["没听清", "再说一遍", "repeat that", "say that again"]},
    "AskingBackConfig": {"Enabled": False},
    "SilenceTimeoutConfig": {
        "Prompt": "抱歉，我没有听到您说话。Sorry, I did not hear you.",
        "Timeout": 10,
        "Threshold": 3,
        "FinalPrompt": "抱歉，听不到您说话，请您稍后再拨。"
        "Sorry, I still cannot hear you. Please call again later.",
        "FinalAction": "HangUp",
        "FinalActionParams": "{}",
    },
    "ComplainingConfig": {
        "Utterances": ["转人工", "人工客服", "投诉", "agent", "operator"],
        "Prompt": "好的，即将为您转接人工客服。OK, transferring you to an agent.",
        "Action": "TransferToAgent",
        "ActionParams": "{}",
    },
    "TTSConfig": {"Voice": "xiaoyun", "Volume": 50, "SpeechRate": 0},
}


class ChatbotNotFound(errors.GatewayError):
    code = "InvalidChatbotInstanceId.NotFound"
    status = 404
    default_message = "The specified ChatbotInstanceId is not a configured bot."


def concurrency(params: Params, required_: bool = True) -> int | None:
    """Concurrency, 1 .. MAX_CONCURRENCY; outside it is InvalidConcurrency.LimitExceeded."""
    raw = params.get("Concurrency")
    if raw is None or not raw.strip():
        if required_:
            raise errors.MissingParameter("Concurrency")
        return None
    text = raw.strip()
    if not text.lstrip("-").isdigit() or len(text) > 19:
        raise errors.InvalidParameter.named("Concurrency", "must be a whole number")
    value = int(text)
    if not 1 <= value <= MAX_CONCURRENCY:
        raise errors.InvalidConcurrency(
            f"The specified Concurrency {value} is outside 1 .. {MAX_CONCURRENCY}."
        )
    return value


def instance_fields(row: StoredInstance) -> Fields:
    doc = row.document
    return {
        "InstanceId": row.instance_id,
        "Name": doc["Name"],
        "Description": doc["Description"],
        "Concurrency": doc["Concurrency"],
        "Status": row.status,
        "ApplicableOperations": list(APPLICABLE_OPERATIONS.get(row.status, ())),
        "CreateTime": row.create_time,
        "ModifyTime": row.modify_time,
        "ModifyUserName": row.modify_user_name,
    }


def actions(context: Context) -> dict[str, Handler]:
    editor = editor_of(context)

    async def create_instance(params: Params, request: Request) -> Fields:
        name = required(params, "Name", MAX_NAME_CHARS)
        limit = concurrency(params)
        description = optional(params, "Description", MAX_DESCRIPTION_CHARS)
        instance_id = str(uuid.uuid4())
        document: Document = {
            "InstanceId": instance_id,
            "Name": name,
            "Description": description,
            "Concurrency": limit,
            **copy.deepcopy(dict(DEFAULT_NAVIGATION)),
        }
        await editor.create(document, request.user)
        return {"InstanceId": instance_id}

    async def describe_instance(params: Params, request: Request) -> Fields:
        instance_id = required(params, "InstanceId", MAX_ID_CHARS)
        store = context.need_store()
        row = await store.readers.run(catalog.load_one, instance_id)
        if row is None:
            raise errors.InstanceNotFound()
        return instance_fields(row)

    async def list_instances(params: Params, request: Request) -> Fields:
        number, size = page(params)
        store = context.need_store()
        total, rows = await store.readers.run(catalog.load_page, (number - 1) * size, size)
        return {
            "PageNumber": number,
            "PageSize": size,
            "TotalCount": total,
            "Instances": [instance_fields(row) for row in rows],
        }

    async def modify_instance(params: Params, request: Request) -> Fields:
        instance_id = required(params, "InstanceId", MAX_ID_CHARS)
        limit = concurrency(params)
        # Absent keeps the current value; Name is an extension (the current
        # SDK sends it), Description may be set to "".
        changes: dict[str, object] = {"Concurrency": limit}
        if "Description" in params:
            changes["Description"] = optional(params, "Description", MAX_DESCRIPTION_CHARS)
        if "Name" in params:
            changes["Name"] = required(params, "Name", MAX_NAME_CHARS)
        await editor.edit(instance_id, lambda doc: doc.update(changes), request.user)
        return {}

    def set_enabled(enabled: bool) -> Handler:
        async def handler(params: Params, request: Request) -> Fields:
            instance_id = required(params, "InstanceId", MAX_ID_CHARS)
            await editor.edit(
                instance_id, lambda doc: doc.update({catalog.STATUS_KEY: enabled}), request.user
            )
            return {}

        return handler

    async def delete_instance(params: Params, request: Request) -> Fields:
        await editor.delete(required(params, "InstanceId", MAX_ID_CHARS))
        return {}

    async def associate_chatbot_instance(params: Params, request: Request) -> Fields:
        instance_id = required(params, "InstanceId", MAX_ID_CHARS)
        name = required(params, "ChatbotInstanceId", MAX_ID_CHARS)
        optional(params, "ChatbotName", MAX_ID_CHARS)
        if context.instances.get(instance_id) is None:
            raise errors.InstanceNotFound()
        if name == EMBEDDED:
            name = ""
        elif name not in context.bots:
            raise ChatbotNotFound(
                f"No bot named {name!r} is configured; configured: "
                f"{', '.join(sorted(context.bots)) or 'none'} (or {EMBEDDED!r})."
            )
        await editor.edit(instance_id, lambda doc: doc.update(Chatbot=name), request.user)
        return {}

    return {
        "CreateInstance": create_instance,
        "DescribeInstance": describe_instance,
        "ListInstances": list_instances,
        "ModifyInstance": modify_instance,
        "EnableInstance": set_enabled(True),
        "DisableInstance": set_enabled(False),
        "DeleteInstance": delete_instance,
        "AssociateChatbotInstance": associate_chatbot_instance,
    }

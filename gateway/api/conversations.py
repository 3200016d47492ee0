"""Conversation records over the API: QueryConversations, ListConversations,
DescribeConversation, ListConversationDetails (seed §12) and DescribeRecording
(seed §13), as docs/conversations.md documents them.

Every read runs on the store's read-only connections, off the loop
(`Readers.run`). An instance is known when the gateway serves it or when
conversations are recorded for it: the history of a deleted instance stays
readable. Field types follow the seed's tables: times are integer
milliseconds, `TransferredToAgent` a boolean, `SequenceId` a string.
"""

from __future__ import annotations

from typing import Any

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, MAX_NUMBER_CHARS, Params, optional, page, required
from gateway.api.manage import Context, Fields, Handler, Request
from gateway.store import queries
from gateway.store.queries import ConversationFilter, ConversationRow
from gateway.store.store import Store

# 9999-12-31T23:59:59.999Z: the latest BeginTime*Range accepted.
MAX_TIME_MS = 253_402_300_799_999
LEFT = "BeginTimeLeftRange"
RIGHT = "BeginTimeRightRange"


# -- parameters shared by the query, statistics and export actions ---------------


def time_param(params: Params, name: str) -> int | None:
    """An optional time in ms since the epoch, 0 to `MAX_TIME_MS`; None when absent."""
    raw = params.get(name, "")
    if not raw.strip():
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 15:
        raise errors.InvalidParameter.named(name, "must be milliseconds since the epoch")
    value = int(text)
    if value > MAX_TIME_MS:
        raise errors.InvalidParameter.named(name, "is after the year 9999")
    return value


def begin_range(params: Params) -> tuple[int | None, int | None]:
    """BeginTimeLeftRange and BeginTimeRightRange (inclusive), in order."""
    left = time_param(params, LEFT)
    right = time_param(params, RIGHT)
    if left is not None and right is not None and left > right:
        raise errors.InvalidParameter.named(RIGHT, f"is earlier than {LEFT}")
    return left, right


async def known_instance(context: Context, params: Params) -> tuple[str, Store]:
    """The InstanceId parameter, served now or with recorded conversations, and the store."""
    store = context.need_store()
    instance_id = required(params, "InstanceId", MAX_ID_CHARS)
    if context.instances.get(instance_id) is None and not await store.readers.run(
        queries.has_conversations, instance_id
    ):
        raise errors.InstanceNotFound()
    return instance_id, store


# -- responses ------------------------------------------------------------------


def conversation_fields(row: ConversationRow) -> dict[str, Any]:
    """One conversation as the seed's Conversations items and DescribeConversation."""
    return {
        "ConversationId": row.conversation_id,
        "CallingNumber": row.calling_number,
        "BeginTime": row.begin_time,
        # None (JSON null, an empty XML element) while the conversation is live.
        "EndTime": row.end_time,
        "TransferredToAgent": row.transferred_to_agent,
        "SkillGroupId": row.skill_group_id,
        "UserUtteranceCount": row.user_utterance_count,
        "EffectiveAnswerCount": row.effective_answer_count,
    }


def recording_url(context: Context, request: Request, stored: str) -> str:
    """FilePath: a signed, expiring link when the recording is a file the
    gateway serves (stored as "<link kind>/<name>" by the recorder), else
    the stored value as it is (a URL the switch uploaded to, for one)."""
    kind, _, name = stored.partition("/")
    try:
        return context.links.url(request.base_url, kind, name)
    except ValueError:
        return stored


def actions(context: Context) -> dict[str, Handler]:
    async def _page(store: Store, f: ConversationFilter, number: int, size: int) -> Fields:
        found = await store.readers.run(queries.conversation_page, f, number, size)
        return {
            "PageNumber": number,
            "PageSize": size,
            "TotalCount": found.total,
            "Conversations": [conversation_fields(r) for r in found.rows],
        }

    async def query_conversations(params: Params, request: Request) -> Fields:
        # Parameters first: a bad one is refused without touching the store.
        number, size = page(params)
        calling = optional(params, "CallingNumber", MAX_NUMBER_CHARS).strip()
        left, right = begin_range(params)
        instance_id, store = await known_instance(context, params)
        f = ConversationFilter(instance_id, calling, left, right)
        return await _page(store, f, number, size)

    async def list_conversations(params: Params, request: Request) -> Fields:
        number, size = page(params)
        instance_id, store = await known_instance(context, params)
        return await _page(store, ConversationFilter(instance_id), number, size)

    async def _conversation(params: Params) -> tuple[str, ConversationRow]:
        conversation_id = required(params, "ConversationId", MAX_ID_CHARS)
        instance_id, store = await known_instance(context, params)
        row = await store.readers.run(queries.conversation, instance_id, conversation_id)
        if row is None:
            raise errors.ConversationNotFound()
        return instance_id, row

    async def describe_conversation(params: Params, request: Request) -> Fields:
        _, row = await _conversation(params)
        return conversation_fields(row)

    async def describe_recording(params: Params, request: Request) -> Fields:
        _, row = await _conversation(params)
        if not row.recording_file_path:
            raise errors.RecordingNotFound()
        return {
            "FileName": row.recording_file_name,
            "FilePath": recording_url(context, request, row.recording_file_path),
        }

    async def list_conversation_details(params: Params, request: Request) -> Fields:
        conversation_id = required(params, "ConversationId", MAX_ID_CHARS)
        instance_id, store = await known_instance(context, params)
        lines = await store.readers.run(queries.details, instance_id, conversation_id)
        if lines is None:
            raise errors.ConversationNotFound()
        return {
            "ConversationDetails": [
                {
                    "ConversationId": conversation_id,
                    "Speaker": line.speaker,
                    "Utterance": line.utterance,
                    "Action": line.action,
                    "ActionParams": line.action_params,
                    "CreateTime": line.create_time,
                    "SequenceId": str(line.sequence_id),
                }
                for line in lines
            ]
        }

    return {
        "QueryConversations": query_conversations,
        "ListConversations": list_conversations,
        "DescribeConversation": describe_conversation,
        "ListConversationDetails": list_conversation_details,
        "DescribeRecording": describe_recording,
    }

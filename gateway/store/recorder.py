"""The recorder: each answered turn becomes conversation records, off the turn path.

Rules of this file:
- `turn` is called by every front door (the bridge, the RPC API) after a
  turn is answered. It builds at most two records and hands them to the
  store's writer with `submit`, which never blocks: a full queue drops the
  record, counts it (`ivrgw_records_dropped_total`) and logs it. Nothing
  here awaits or touches the database.
- A conversation's counters live here, by (InstanceId, ConversationId),
  from BeginDialogue to its end, so the end record carries them without a
  read: UserUtteranceCount (utterances and digits), EffectiveAnswerCount
  (those the bot understood: navigator outcome "answer"),
  UnrecognizedCount (those it did not: "unrecognized", "unrecognized_final"),
  SilenceTimeoutCount, and the last reply's outcome and action.
  docs/statistics.md defines the rates built on them.
- A conversation ends at EndDialogue (HangupCause: the switch's cause, or
  "EndDialogue"), or when it has been idle for `idle_timeout` ("Expired",
  found by `expire`, which the gateway's sweeper calls).
- The greeting is round 0 (a Chatbot line only); each later turn is the
  next round, with the caller's line and the chatbot's reply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.dialogue.operations import (
    Action,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Operation,
    Reply,
    SilenceTimeout,
)
from gateway.store.records import (
    ConversationBegun,
    ConversationEnded,
    ConversationSeen,
    RecordingSaved,
    Round,
)
from gateway.store.writer import WriteOp

Submit = Callable[[WriteOp[Any]], bool]
Key = tuple[str, str]

_UNDERSTOOD = "answer"
_NOT_UNDERSTOOD = frozenset(("unrecognized", "unrecognized_final"))
EXPIRED = "Expired"
END_DIALOGUE = "EndDialogue"


class _Conversation:
    __slots__ = (
        "effective", "inputs", "last_action", "last_outcome", "last_params", "seen",
        "sequence", "silences", "unrecognized",
    )  # fmt: skip

    def __init__(self, now: float) -> None:
        self.sequence = 0
        self.inputs = 0
        self.effective = 0
        self.unrecognized = 0
        self.silences = 0
        self.last_outcome = ""
        self.last_action = ""
        self.last_params = "{}"
        self.seen = now


def _skill_group(action_params: str) -> str:
    try:
        params = orjson.loads(action_params)
    except orjson.JSONDecodeError:
        return ""
    value = params.get("skillGroupId", "") if isinstance(params, dict) else ""
    return value if isinstance(value, str) else str(value)


class Recorder:
    def __init__(
        self,
        submit: Submit,
        idle_timeout: float,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.submit = submit
        self.idle_timeout = idle_timeout
        self.wall = wall
        self.clock = clock
        self._live: dict[Key, _Conversation] = {}

    def turn(
        self,
        front: str,
        instance_id: str,
        conversation_id: str,
        op: Operation,
        reply: Reply | None,
        outcome: str,
        debug: bool = False,
        cause: str = "",
    ) -> None:
        """Record one answered turn (`outcome`: the navigator's, or "fallback")."""
        key = (instance_id, conversation_id)
        now_ms = int(self.wall() * 1000)
        kind = type(op)
        if kind is BeginDialogue:
            assert isinstance(op, BeginDialogue)
            conv = self._live[key] = _Conversation(self.clock())
            self.submit(
                ConversationBegun(
                    instance_id,
                    conversation_id,
                    now_ms,
                    op.calling_number,
                    op.called_number,
                    debug,
                    front,
                )
            )
            if reply is not None:
                self._reply(conv, reply, outcome)
                self.submit(
                    Round(
                        instance_id,
                        conversation_id,
                        0,
                        now_ms,
                        "",
                        "",
                        reply.text,
                        reply.action.value,
                        reply.action_params,
                    )
                )
            return
        conv_or_none = self._live.get(key)
        if kind is EndDialogue:
            assert isinstance(op, EndDialogue)
            if conv_or_none is not None:
                del self._live[key]
                self._end(key, conv_or_none, now_ms, cause or op.cause or END_DIALOGUE)
            return
        if conv_or_none is None:
            # Begun before a restart, or by another gateway: its rounds are
            # still recorded, numbered from here.
            conv_or_none = self._live[key] = _Conversation(self.clock())
            self.submit(ConversationSeen(instance_id, conversation_id, now_ms))
        conv = conv_or_none
        conv.seen = self.clock()
        conv.sequence += 1
        if kind is Dialogue:
            assert isinstance(op, Dialogue)
            said, name = op.utterance, "Dialogue"
            conv.inputs += 1
        elif kind is CollectedNumber:
            assert isinstance(op, CollectedNumber)
            said, name = op.number, "CollectedNumber"
            conv.inputs += 1
        else:
            said, name = "", "SilenceTimeout"
            conv.silences += 1
        if reply is None:
            self.submit(
                Round(instance_id, conversation_id, conv.sequence, now_ms, said, name, "", "")
            )
            return
        if kind is not SilenceTimeout:
            if outcome == _UNDERSTOOD:
                conv.effective += 1
            elif outcome in _NOT_UNDERSTOOD:
                conv.unrecognized += 1
        self._reply(conv, reply, outcome)
        self.submit(
            Round(
                instance_id,
                conversation_id,
                conv.sequence,
                now_ms,
                said,
                name,
                reply.text,
                reply.action.value,
                reply.action_params,
            )
        )

    @staticmethod
    def _reply(conv: _Conversation, reply: Reply, outcome: str) -> None:
        conv.last_outcome = outcome
        conv.last_action = reply.action.value
        conv.last_params = reply.action_params

    def _end(self, key: Key, conv: _Conversation, now_ms: int, cause: str) -> None:
        transferred = conv.last_action == Action.TRANSFER_TO_AGENT.value
        self.submit(
            ConversationEnded(
                key[0],
                key[1],
                now_ms,
                conv.inputs,
                conv.effective,
                transferred,
                _skill_group(conv.last_params) if transferred else "",
                cause,
                conv.unrecognized,
                conv.silences,
                conv.last_outcome,
            )
        )

    def recording(
        self, instance_id: str, conversation_id: str, file_name: str, kind: str, name: str
    ) -> bool:
        """A conversation's recording is saved: DescribeRecording's FileName, and
        its file as a signed link's `kind` and `name` (gateway.api.links), kept
        in RecordingFilePath as "<kind>/<name>"."""
        op = RecordingSaved(
            instance_id, conversation_id, int(self.wall() * 1000), file_name, f"{kind}/{name}"
        )
        return self.submit(op)

    def expire(self) -> int:
        """End the conversations idle past the timeout (HangupCause "Expired")."""
        deadline = self.clock() - self.idle_timeout
        stale = [key for key, conv in self._live.items() if conv.seen <= deadline]
        now_ms = int(self.wall() * 1000)
        for key in stale:
            self._end(key, self._live.pop(key), now_ms, EXPIRED)
        return len(stale)

    def close(self) -> None:
        """At shutdown: the live conversations are not ended; they stay open
        (EndTime NULL) as a restart would find them."""
        self._live.clear()

    def __len__(self) -> int:
        return len(self._live)

    def __repr__(self) -> str:
        return f"Recorder(live={len(self._live)}, idle_timeout={self.idle_timeout})"

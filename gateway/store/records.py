"""Conversation records: the typed write operations the bridge hands the writer.

Rules of this file:
- Each record is a NamedTuple (one is built per turn, so cheap to make) whose
  `apply(db)` the writer thread runs inside its batch transaction. Nothing
  here awaits, reads a clock or commits; times come in as integer
  milliseconds since the epoch.
- Any record may be the first to arrive for its conversation (its
  ConversationBegun was dropped on a full queue, or the gateway restarted
  mid-call), so every record upserts the conversation row first: nothing
  recorded is ever orphaned, and a later record fills in what it knows.
- A turn line is keyed by (InstanceId, ConversationId, SequenceId, Speaker);
  a replayed line is ignored, the first one stands.
- Customer lines carry the operation as `Action` (Dialogue, CollectedNumber,
  SilenceTimeout ...), Chatbot lines the reply's action (Broadcast,
  TransferToAgent ...), as the seed's ListConversationDetails example does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

Speaker = Literal["Customer", "Chatbot"]
CUSTOMER: Final = "Customer"
CHATBOT: Final = "Chatbot"

# A conversation row for a record that arrives first; its BeginTime is the
# earliest time that record knows.
_PLACEHOLDER = """
INSERT INTO conversations (InstanceId, ConversationId, BeginTime) VALUES (?, ?, ?)
ON CONFLICT (InstanceId, ConversationId) DO NOTHING
"""

_BEGUN = """
INSERT INTO conversations
    (InstanceId, ConversationId, BeginTime, CallingNumber, CalledNumber, Debug, FrontDoor)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (InstanceId, ConversationId) DO UPDATE SET
    BeginTime = excluded.BeginTime,
    CallingNumber = excluded.CallingNumber,
    CalledNumber = excluded.CalledNumber,
    Debug = excluded.Debug,
    FrontDoor = excluded.FrontDoor
"""

_TURN = """
INSERT INTO conversation_details
    (InstanceId, ConversationId, SequenceId, Speaker, Utterance, Action, ActionParams, CreateTime)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (InstanceId, ConversationId, SequenceId, Speaker) DO NOTHING
"""

_ENDED = """
INSERT INTO conversations
    (InstanceId, ConversationId, BeginTime, EndTime, UserUtteranceCount,
     EffectiveAnswerCount, TransferredToAgent, SkillGroupId, HangupCause,
     UnrecognizedCount, SilenceTimeoutCount, LastOutcome)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (InstanceId, ConversationId) DO UPDATE SET
    EndTime = excluded.EndTime,
    UserUtteranceCount = excluded.UserUtteranceCount,
    EffectiveAnswerCount = excluded.EffectiveAnswerCount,
    TransferredToAgent = excluded.TransferredToAgent,
    SkillGroupId = excluded.SkillGroupId,
    HangupCause = excluded.HangupCause,
    UnrecognizedCount = excluded.UnrecognizedCount,
    SilenceTimeoutCount = excluded.SilenceTimeoutCount,
    LastOutcome = excluded.LastOutcome
"""

_RECORDING = """
INSERT INTO conversations
    (InstanceId, ConversationId, BeginTime, RecordingFileName, RecordingFilePath)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (InstanceId, ConversationId) DO UPDATE SET
    RecordingFileName = excluded.RecordingFileName,
    RecordingFilePath = excluded.RecordingFilePath
"""


class ConversationBegun(NamedTuple):
    """BeginDialogue (or DebugBeginDialogue) reached the dialogue service."""

    instance_id: str
    conversation_id: str
    begin_time: int
    calling_number: str = ""
    called_number: str = ""
    debug: bool = False
    # Which way the call came in: "rpc", "freeswitch", "asterisk", "websocket" ...
    front_door: str = ""

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            _BEGUN,
            (
                self.instance_id,
                self.conversation_id,
                self.begin_time,
                self.calling_number,
                self.called_number,
                int(self.debug),
                self.front_door,
            ),
        )


class ConversationSeen(NamedTuple):
    """A conversation the recorder did not see begin (it began before a
    restart): its row, if missing, so its rounds have one to belong to."""

    instance_id: str
    conversation_id: str
    seen_time: int

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(_PLACEHOLDER, (self.instance_id, self.conversation_id, self.seen_time))


class Turn(NamedTuple):
    """One line of a conversation: what the customer did, or what the chatbot answered.

    A round of dialogue is usually two lines with the same `sequence_id`:
    the customer's (Utterance is the words, the digits, or "" for a silence
    timeout) and the chatbot's (Utterance is the prompt it played).
    """

    instance_id: str
    conversation_id: str
    sequence_id: int
    speaker: Speaker
    utterance: str
    action: str
    create_time: int
    action_params: str = "{}"

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(_PLACEHOLDER, (self.instance_id, self.conversation_id, self.create_time))
        db.execute(
            _TURN,
            (
                self.instance_id,
                self.conversation_id,
                self.sequence_id,
                self.speaker,
                self.utterance,
                self.action,
                self.action_params,
                self.create_time,
            ),
        )


class Round(NamedTuple):
    """One round of a conversation, both lines in one write: the customer's
    input (absent for the greeting: `customer_action` "") and the chatbot's
    reply (absent when the turn had none: `chatbot_action` "").

    The recorder submits one of these per turn instead of two `Turn`s, so a
    turn costs the writer queue one append.
    """

    instance_id: str
    conversation_id: str
    sequence_id: int
    create_time: int
    customer_utterance: str
    customer_action: str
    chatbot_utterance: str
    chatbot_action: str
    chatbot_params: str = "{}"

    @staticmethod
    def apply_many(db: sqlite3.Connection, rounds: Sequence[Round]) -> None:
        """Many rounds in one `executemany` (the writer's fast path for a batch).

        No placeholder conversation rows: the recorder writes
        ConversationBegun first. If one is missing after all, the foreign
        key fails the batch, and the writer applies its operations one by
        one, where `apply` adds the placeholder.
        """
        rows: list[tuple[str, str, int, str, str, str, str, int]] = []
        append = rows.append
        for r in rounds:
            if r.customer_action:
                append(
                    (
                        r.instance_id,
                        r.conversation_id,
                        r.sequence_id,
                        CUSTOMER,
                        r.customer_utterance,
                        r.customer_action,
                        "{}",
                        r.create_time,
                    )
                )
            if r.chatbot_action:
                append(
                    (
                        r.instance_id,
                        r.conversation_id,
                        r.sequence_id,
                        CHATBOT,
                        r.chatbot_utterance,
                        r.chatbot_action,
                        r.chatbot_params,
                        r.create_time,
                    )
                )
        db.executemany(_TURN, rows)

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(_PLACEHOLDER, (self.instance_id, self.conversation_id, self.create_time))
        if self.customer_action:
            db.execute(
                _TURN,
                (
                    self.instance_id,
                    self.conversation_id,
                    self.sequence_id,
                    CUSTOMER,
                    self.customer_utterance,
                    self.customer_action,
                    "{}",
                    self.create_time,
                ),
            )
        if self.chatbot_action:
            db.execute(
                _TURN,
                (
                    self.instance_id,
                    self.conversation_id,
                    self.sequence_id,
                    CHATBOT,
                    self.chatbot_utterance,
                    self.chatbot_action,
                    self.chatbot_params,
                    self.create_time,
                ),
            )


class ConversationEnded(NamedTuple):
    """The conversation is over: hung up, transferred, or expired."""

    instance_id: str
    conversation_id: str
    end_time: int
    user_utterance_count: int = 0
    effective_answer_count: int = 0
    transferred_to_agent: bool = False
    skill_group_id: str = ""
    # Why it ended: the switch's cause ("NORMAL_CLEARING"), or the gateway's
    # ("EndDialogue", "HangUp", "TransferToAgent", "Expired" ...).
    hangup_cause: str = ""
    # Caller inputs the bot did not understand, silence timeouts, and the
    # navigator's outcome of the last reply (docs/statistics.md).
    unrecognized_count: int = 0
    silence_timeout_count: int = 0
    last_outcome: str = ""

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            _ENDED,
            (
                self.instance_id,
                self.conversation_id,
                self.end_time,
                self.end_time,
                self.user_utterance_count,
                self.effective_answer_count,
                int(self.transferred_to_agent),
                self.skill_group_id,
                self.hangup_cause,
                self.unrecognized_count,
                self.silence_timeout_count,
                self.last_outcome,
            ),
        )


class RecordingSaved(NamedTuple):
    """A recording of the conversation exists (DescribeRecording's FileName, FilePath)."""

    instance_id: str
    conversation_id: str
    saved_time: int
    file_name: str
    file_path: str

    def apply(self, db: sqlite3.Connection) -> None:
        db.execute(
            _RECORDING,
            (
                self.instance_id,
                self.conversation_id,
                self.saved_time,
                self.file_name,
                self.file_path,
            ),
        )


Record = ConversationBegun | ConversationSeen | Turn | Round | ConversationEnded | RecordingSaved

"""Call events: what a front door (a PBX adapter, the JSON webhook, a
websocket client) says happened on a call, before it becomes a dialogue
operation (gateway.calls.bridge).

Adapters' codecs produce these from their wire formats; they carry no I/O
and no behaviour. `call_id` is the switch's key for the call (FreeSWITCH's
session_id, an Asterisk channel id, a client's call id); it is also the
conversation's ConversationId.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from gateway.dialogue.operations import EMPTY_VARS


class CallStarted(NamedTuple):
    call_id: str
    instance_id: str
    calling: str
    called: str = ""
    context: Mapping[str, str] = EMPTY_VARS


class UserSaid(NamedTuple):
    call_id: str
    text: str
    # The recognizer's confidence in [0, 1], when it gave one.
    confidence: float | None = None


class DigitsEntered(NamedTuple):
    call_id: str
    digits: str


class NoInput(NamedTuple):
    """The caller gave no input (or none that matched) after a prompt."""

    call_id: str


class CallEnded(NamedTuple):
    call_id: str
    cause: str = "NORMAL_CLEARING"


CallEvent = CallStarted | UserSaid | DigitsEntered | NoInput | CallEnded

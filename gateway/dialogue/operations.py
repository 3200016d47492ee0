"""The five dialogue operations, the reply, and the Action enum.

These are the plain values that flow through one turn: an adapter or the RPC
API builds a request, a dialogue service answers with a `Reply`. They carry
no I/O and no behaviour beyond construction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Action(enum.StrEnum):
    """What the switch does after playing `Reply.text`."""

    BROADCAST = "Broadcast"
    TRANSFER_TO_AGENT = "TransferToAgent"
    TRANSFER_TO_IVR = "TransferToIVR"
    HANG_UP = "HangUp"
    # Passed through untouched: a web channel may use it, a PBX ignores it.
    REDIRECT_TO_PAGE = "RedirectToPage"


ACTIONS: Mapping[str, Action] = MappingProxyType({a.value: a for a in Action})

EMPTY_VARS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class BeginDialogue:
    calling_number: str
    called_number: str = ""
    variables: Mapping[str, str] = field(default_factory=lambda: EMPTY_VARS)


@dataclass(frozen=True, slots=True)
class Dialogue:
    utterance: str
    variables: Mapping[str, str] = field(default_factory=lambda: EMPTY_VARS)


@dataclass(frozen=True, slots=True)
class CollectedNumber:
    number: str


@dataclass(frozen=True, slots=True)
class SilenceTimeout:
    variables: Mapping[str, str] = field(default_factory=lambda: EMPTY_VARS)


@dataclass(frozen=True, slots=True)
class EndDialogue:
    pass


Operation = BeginDialogue | Dialogue | CollectedNumber | SilenceTimeout | EndDialogue

OPERATION_NAMES: Mapping[type, str] = MappingProxyType(
    {
        BeginDialogue: "BeginDialogue",
        Dialogue: "Dialogue",
        CollectedNumber: "CollectedNumber",
        SilenceTimeout: "SilenceTimeout",
        EndDialogue: "EndDialogue",
    }
)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the caller hears next and what the switch does after it.

    `action_params` is the stringified JSON object the API returns as
    `ActionParams`. `wait_seconds` is how long the switch waits for input
    after the prompt before reporting a SilenceTimeout (0 when the action
    ends the dialogue on this side).
    """

    text: str
    action: Action = Action.BROADCAST
    interruptible: bool = True
    action_params: str = "{}"
    wait_seconds: int = 10

    @property
    def ends_dialogue(self) -> bool:
        return self.action is not Action.BROADCAST

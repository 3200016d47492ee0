"""What the navigator asks a bot, and what a bot answers.

The navigator never calls a bot itself: it returns an `AskBot` step holding a
`BotQuery`, the caller (a dialogue service) gets a `BotAnswer` or `None` from
whatever bot the instance uses, and hands it back. So the navigator stays
pure, and the same policy serves an embedded rules bot, a webhook or an LLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple, Protocol

from gateway.dialogue.operations import EMPTY_VARS, Action

QueryKind = Literal["utterance", "digits", "intent"]


class BotQuery(NamedTuple):
    kind: QueryKind
    # The utterance (normalised form in `normalized`), the digits, or the
    # intent trigger name.
    text: str
    normalized: str
    variables: Mapping[str, str]
    bot_state: str
    turn: int


class BotAnswer(NamedTuple):
    text: str
    action: Action = Action.BROADCAST
    action_params: str = "{}"
    interruptible: bool = True
    # Variables to set on the conversation, and the bot's own state (for
    # example the DTMF menu the caller is in now).
    variables: Mapping[str, str] = EMPTY_VARS
    bot_state: str | None = None
    # The answer itself asks the caller for something (a menu prompt, "say
    # your account number"): no asking-back question is appended to it.
    expects_input: bool = False


class SyncBot(Protocol):
    """A bot that answers without I/O (the embedded rules bot)."""

    def answer(self, query: BotQuery) -> BotAnswer | None: ...


class BotContext(NamedTuple):
    """Which conversation a question belongs to (the navigator does not know)."""

    instance_id: str
    conversation_id: str


class AsyncBot(Protocol):
    """A bot reached over the network (webhook, LLM).

    `ask` answers within `timeout` seconds or raises a
    `gateway.errors.BackendError`; `None` means the bot did not understand
    (an unrecognized turn, not a failure). The dialogue service owns the
    turn budget, the circuit breaker and the fallback; a bot only talks.
    """

    name: str

    async def ask(
        self, query: BotQuery, context: BotContext, timeout: float
    ) -> BotAnswer | None: ...

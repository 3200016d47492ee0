"""What each dialogue action takes: parameters, caps and the operation they build.

Pure functions from the decoded parameters to an `Operation`, raising the
documented errors (docs/api.md): a missing or empty required parameter is
`Missing<Name>`, anything over its cap or of the wrong shape is
`InvalidParameter`. The RPC transport (gateway.api.rpc) looks actions up in
`DIALOGUE_ACTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from gateway import errors
from gateway.dialogue.operations import (
    EMPTY_VARS,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Operation,
    SilenceTimeout,
)

# Field caps (docs/api.md). A field over its cap is InvalidParameter.
MAX_ID_CHARS = 128
MAX_NUMBER_CHARS = 64
MAX_UTTERANCE_CHARS = 1_000
MAX_DIGITS = 32
MAX_CONTEXT_CHARS = 8_192
MAX_CONTEXT_KEYS = 64
MAX_CONTEXT_KEY_CHARS = 64
_DTMF = frozenset("0123456789*#ABCDabcd")

Params = Mapping[str, str]


# -- parameters ---------------------------------------------------------------


def required(params: Params, name: str, cap: int) -> str:
    value = params.get(name)
    if value is None or not value.strip():
        raise errors.MissingParameter(name)
    if len(value) > cap:
        raise errors.InvalidParameter.named(name, f"longer than {cap} characters")
    return value


def optional(params: Params, name: str, cap: int) -> str:
    value = params.get(name, "")
    if len(value) > cap:
        raise errors.InvalidParameter.named(name, f"longer than {cap} characters")
    return value


def _context_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def context(params: Params, name: str) -> Mapping[str, str]:
    """A JSON-object parameter as conversation variables (values as strings)."""
    raw = params.get(name)
    if raw is None or not raw.strip():
        return EMPTY_VARS
    if len(raw) > MAX_CONTEXT_CHARS:
        raise errors.InvalidParameter.named(name, f"longer than {MAX_CONTEXT_CHARS} characters")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.InvalidParameter.named(name, "not valid JSON") from None
    if not isinstance(parsed, dict):
        raise errors.InvalidParameter.named(name, "must be a JSON object")
    if len(parsed) > MAX_CONTEXT_KEYS:
        raise errors.InvalidParameter.named(name, f"more than {MAX_CONTEXT_KEYS} keys")
    if any(len(k) > MAX_CONTEXT_KEY_CHARS for k in parsed):
        raise errors.InvalidParameter.named(name, f"a key longer than {MAX_CONTEXT_KEY_CHARS}")
    return {k: _context_value(v) for k, v in parsed.items()} if parsed else EMPTY_VARS


def _begin(p: Params) -> Operation:
    return BeginDialogue(
        calling_number=required(p, "CallingNumber", MAX_NUMBER_CHARS),
        called_number=optional(p, "CalledNumber", MAX_NUMBER_CHARS),
        variables=context(p, "InitialContext"),
    )


def _dialogue(p: Params) -> Operation:
    optional(p, "CallingNumber", MAX_NUMBER_CHARS)
    optional(p, "CalledNumber", MAX_NUMBER_CHARS)
    return Dialogue(
        utterance=required(p, "Utterance", MAX_UTTERANCE_CHARS),
        variables=context(p, "AdditionalContext"),
    )


def _collected(p: Params) -> Operation:
    number = optional(p, "Number", MAX_DIGITS)
    if number and not _DTMF.issuperset(number):
        raise errors.InvalidParameter.named("Number", "only 0-9, *, # and A-D are DTMF digits")
    return CollectedNumber(number)


def _silence(p: Params) -> Operation:
    return SilenceTimeout(variables=context(p, "InitialContext"))


# HangUpParams keys that name why the call ended, first found wins.
_CAUSE_KEYS = ("hangUpCause", "HangUpCause", "cause", "hangUpDirection")


def _end(p: Params) -> Operation:
    params = context(p, "HangUpParams")
    cause = next((params[k] for k in _CAUSE_KEYS if params.get(k)), "")
    return EndDialogue(cause[:MAX_NUMBER_CHARS]) if cause else EndDialogue()


@dataclass(frozen=True, slots=True)
class DialogueAction:
    operation: str  # the label on metrics: one of the five operations
    build: Callable[[Params], Operation]
    debug: bool = False


DIALOGUE_ACTIONS: Mapping[str, DialogueAction] = {
    "BeginDialogue": DialogueAction("BeginDialogue", _begin),
    "Dialogue": DialogueAction("Dialogue", _dialogue),
    "CollectedNumber": DialogueAction("CollectedNumber", _collected),
    "SilenceTimeout": DialogueAction("SilenceTimeout", _silence),
    "EndDialogue": DialogueAction("EndDialogue", _end),
    "DebugBeginDialogue": DialogueAction("BeginDialogue", _begin, debug=True),
    "DebugDialogue": DialogueAction("Dialogue", _dialogue, debug=True),
    "DebugCollectedNumber": DialogueAction("CollectedNumber", _collected, debug=True),
}


# -- shared by the management actions -------------------------------------------

MAX_PAGE_SIZE = 100


def integer(params: Params, name: str, low: int, high: int, default: int | None = None) -> int:
    """A whole-number parameter within [low, high]; absent uses `default`
    (None: the parameter is required). Out of range or not a number is
    InvalidParameter naming the parameter."""
    raw = params.get(name)
    if raw is None or not raw.strip():
        if default is None:
            raise errors.MissingParameter(name)
        return default
    text = raw.strip()
    if not text.lstrip("-").isdigit() or len(text) > 19:
        raise errors.InvalidParameter.named(name, "must be a whole number")
    value = int(text)
    if not low <= value <= high:
        raise errors.InvalidParameter.named(name, f"must be between {low} and {high}")
    return value


def page(params: Params) -> tuple[int, int]:
    """PageNumber (>= 1) and PageSize (1-100), both required as the seed has them."""
    number = integer(params, "PageNumber", 1, 1_000_000_000)
    size = integer(params, "PageSize", 1, MAX_PAGE_SIZE)
    return number, size

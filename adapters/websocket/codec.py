"""The `ivrgw.v1` websocket protocol's frames (docs/websocket.md), pure.

Rules of this file:
- One JSON object per text frame, with a `type`. `parse` turns a client
  frame into a `Message` (a `Turn` carrying a call event, `Resume`, `Ping`
  or `Partial`), or raises `WireError` with the documented code and the
  frame's `id` and `call_id` when they were readable, for the error frame.
- Every client message but `ping` needs an `id` (a string of at most 128
  characters, or an integer); the gateway echoes it in its answers. Fields
  it does not know are ignored.
- Gateway frames are built here as text, ready for `websocket.send`: the
  reply's `ActionParams` (already JSON) and the `input` object are spliced
  in pre-encoded, not parsed and dumped again per turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from gateway.calls.events import (
    CallEnded,
    CallEvent,
    CallStarted,
    DigitsEntered,
    NoInput,
    UserSaid,
)
from gateway.dialogue.operations import EMPTY_VARS, Action, Reply

SUBPROTOCOL = "ivrgw.v1"
MAX_ID = 128
MAX_TEXT = 1_000
MAX_FIELD = 64
MAX_CONTEXT_KEYS = 64
MAX_CALL_IDS = 1_000
# What a client collects after a Broadcast: up to this many digits, ended by the terminator.
MAX_DIGITS = 32
TERMINATOR = "#"
_DIGITS = re.compile(r"[0-9*#A-D]{1,32}")
_CALL_ID = re.compile(r"[\w.:@-]{1,128}")

MessageId = str | int


class WireError(Exception):
    """A frame the protocol refuses: answered with an `error` frame, never a close."""

    def __init__(
        self, code: str, message: str, id: MessageId | None = None, call_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.call_id = call_id


class Turn(NamedTuple):
    """A message that runs one dialogue turn for its call (start, utterance, digits,
    no_input, end)."""

    id: MessageId | None
    event: CallEvent


class Partial(NamedTuple):
    """A non-final utterance: checked, then dropped without a turn or an answer."""

    id: MessageId
    call_id: str


class Resume(NamedTuple):
    id: MessageId
    call_ids: tuple[str, ...]


class Ping(NamedTuple):
    id: MessageId | None


Message = Turn | Partial | Resume | Ping


# -- parsing ---------------------------------------------------------------------


def _invalid(message: str, mid: MessageId | None = None, call_id: str | None = None) -> WireError:
    return WireError("InvalidParameter", message, mid, call_id)


def _call_id(data: Mapping[str, Any], mid: MessageId) -> str:
    value = data.get("call_id")
    if value is None:
        raise WireError("MissingCallId", "call_id is required", mid)
    if type(value) is not str or not _CALL_ID.fullmatch(value):
        raise _invalid("call_id must be 1-128 letters, digits or _ . : @ -", mid)
    return value


def _string(data: Mapping[str, Any], name: str, cap: int, mid: MessageId, call_id: str) -> str:
    """An optional string field ("" when absent)."""
    value = data.get(name)
    if value is None:
        return ""
    if type(value) is not str or len(value) > cap:
        raise _invalid(f"{name} must be a string of at most {cap} characters", mid, call_id)
    return value


def _context(value: object, mid: MessageId, call_id: str) -> Mapping[str, str]:
    """Conversation variables: string values as they are, others as their JSON text."""
    if value is None:
        return EMPTY_VARS
    if type(value) is not dict or len(value) > MAX_CONTEXT_KEYS:
        raise _invalid(
            f"context must be an object of at most {MAX_CONTEXT_KEYS} keys", mid, call_id
        )
    variables: dict[str, str] = {}
    for name, item in value.items():
        if len(name) > MAX_FIELD:
            raise _invalid(f"context keys are at most {MAX_FIELD} characters", mid, call_id)
        variables[name] = item if type(item) is str else orjson.dumps(item).decode()
    return variables


def _start(data: dict[str, Any], mid: MessageId, default_instance: str) -> Message:
    call_id = _call_id(data, mid)
    instance_id = _string(data, "instance_id", MAX_ID, mid, call_id) or default_instance
    if not instance_id:
        raise WireError(
            "MissingInstanceId", "instance_id is required (no default is configured)", mid, call_id
        )
    event = CallStarted(
        call_id,
        instance_id,
        _string(data, "calling", MAX_FIELD, mid, call_id),
        _string(data, "called", MAX_FIELD, mid, call_id),
        _context(data.get("context"), mid, call_id),
    )
    return Turn(mid, event)


def _utterance(data: dict[str, Any], mid: MessageId, default_instance: str) -> Message:
    call_id = _call_id(data, mid)
    text = data.get("text")
    if type(text) is not str or len(text) > MAX_TEXT:
        raise _invalid(f"text must be a string of at most {MAX_TEXT} characters", mid, call_id)
    final = data.get("final", True)
    if type(final) is not bool:
        raise _invalid("final must be true or false", mid, call_id)
    confidence = data.get("confidence")
    if confidence is not None:
        if type(confidence) not in (int, float) or not 0 <= confidence <= 1:
            raise _invalid("confidence must be a number from 0 to 1", mid, call_id)
        confidence = float(confidence)
    if not final:
        return Partial(mid, call_id)
    return Turn(mid, UserSaid(call_id, text, confidence))


def _digits(data: dict[str, Any], mid: MessageId, default_instance: str) -> Message:
    call_id = _call_id(data, mid)
    digits = data.get("digits")
    if type(digits) is not str or not _DIGITS.fullmatch(digits):
        raise _invalid("digits must be 1-32 of 0-9, *, # and A-D", mid, call_id)
    # The terminator ends an entry; it is not part of the number.
    return Turn(mid, DigitsEntered(call_id, digits.rstrip(TERMINATOR)))


def _no_input(data: dict[str, Any], mid: MessageId, default_instance: str) -> Message:
    return Turn(mid, NoInput(_call_id(data, mid)))


def _end(data: dict[str, Any], mid: MessageId, default_instance: str) -> Message:
    call_id = _call_id(data, mid)
    return Turn(
        mid,
        CallEnded(call_id, _string(data, "cause", MAX_FIELD, mid, call_id) or "NORMAL_CLEARING"),
    )


def _resume(data: dict[str, Any], mid: MessageId, default_instance: str) -> Message:
    ids = data.get("call_ids")
    if (
        type(ids) is not list
        or not 0 < len(ids) <= MAX_CALL_IDS
        or not all(type(i) is str and _CALL_ID.fullmatch(i) for i in ids)
    ):
        raise _invalid(f"call_ids must list 1-{MAX_CALL_IDS} call ids", mid)
    return Resume(mid, tuple(ids))


_Parser = Callable[[dict[str, Any], MessageId, str], Message]
PARSERS: Mapping[str, _Parser] = {
    "utterance": _utterance,
    "digits": _digits,
    "no_input": _no_input,
    "start": _start,
    "end": _end,
    "resume": _resume,
}
TYPES = (*PARSERS, "ping")


def message_id(data: Mapping[str, Any]) -> MessageId | None:
    """The frame's `id` when it is a valid one, else None."""
    mid = data.get("id")
    if type(mid) is int or (type(mid) is str and len(mid) <= MAX_ID):
        return mid
    return None


def parse(text: str | bytes, default_instance: str = "") -> Message:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise WireError("InvalidJson", "the frame is not valid JSON") from None
    if type(data) is not dict:
        raise WireError("InvalidJson", "a frame must be a JSON object")
    mid = message_id(data)
    kind = data.get("type")
    parser = PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        if kind == "ping":
            return Ping(mid)
        raise WireError("UnknownType", f"type must be one of {', '.join(TYPES)}", mid)
    if mid is None:
        if "id" in data:
            raise _invalid(f"id must be a string of at most {MAX_ID} characters or an integer")
        raise WireError("MissingId", f"a {kind} message needs an id")
    return parser(data, mid, default_instance)


# -- rendering -------------------------------------------------------------------

_EMPTY_PARAMS = orjson.Fragment(b"{}")
# ActionParams strings seen so far, checked once and kept pre-encoded. Instances
# have a handful; a bot that makes up new ones each turn only fills the cap.
_PARAMS: dict[str, orjson.Fragment] = {"{}": _EMPTY_PARAMS}
_MAX_PARAMS = 1_024
_INPUTS: dict[int, orjson.Fragment] = {}


def _params(text: str) -> orjson.Fragment:
    fragment = _PARAMS.get(text)
    if fragment is None:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        fragment = orjson.Fragment(orjson.dumps(value)) if type(value) is dict else _EMPTY_PARAMS
        if len(_PARAMS) < _MAX_PARAMS:
            _PARAMS[text] = fragment
    return fragment


def _input(reply: Reply) -> orjson.Fragment | None:
    """What to collect after the prompt: only a Broadcast that waits listens."""
    seconds = reply.wait_seconds
    if reply.action is not Action.BROADCAST or seconds <= 0:
        return None
    fragment = _INPUTS.get(seconds)
    if fragment is None:
        fragment = _INPUTS[seconds] = orjson.Fragment(
            orjson.dumps(
                {"wait_ms": seconds * 1000, "max_digits": MAX_DIGITS, "terminator": TERMINATOR}
            )
        )
    return fragment


def action(call_id: str, mid: MessageId | None, reply: Reply, resumed: bool = False) -> str:
    frame = {
        "type": "action",
        "call_id": call_id,
        "id": mid,
        "action": reply.action,
        "text": reply.text,
        "interruptible": reply.interruptible,
        "action_params": _params(reply.action_params),
        "input": _input(reply),
    }
    if resumed:
        frame["resumed"] = True
    return orjson.dumps(frame).decode()


def ended(call_id: str, mid: MessageId | None) -> str:
    return orjson.dumps({"type": "ended", "call_id": call_id, "id": mid}).decode()


def error(code: str, message: str, mid: MessageId | None = None, call_id: str | None = None) -> str:
    frame: dict[str, object] = {"type": "error", "id": mid, "code": code, "message": message}
    if call_id is not None:
        frame["call_id"] = call_id
    return orjson.dumps(frame).decode()


def wire_error(exc: WireError) -> str:
    return error(exc.code, exc.message, exc.id, exc.call_id)


def pong(mid: MessageId | None) -> str:
    return orjson.dumps({"type": "pong", "id": mid}).decode()

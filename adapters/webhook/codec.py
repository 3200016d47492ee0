"""The generic JSON webhook's wire format (docs/webhook.md), pure.

Rules of this file:
- One event per request: `{"type": "start"|"speech"|"digits"|"no_input"|"end", ...}`
  with the call id from the path. Fields are checked strictly; anything else
  is a `WireError` with the documented code, answered 400.
- `seq` (optional, a non-negative integer) names the turn: a repeated event
  with the same seq gets the first answer (the transport keys on it).
- The answer is the reply as JSON, with what the client needs to collect
  input next: how long to wait, how many digits, the terminator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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

MAX_TEXT = 1_000
MAX_CONTEXT_KEYS = 64
MAX_DIGITS = 32
_DIGITS = re.compile(r"[0-9*#A-D]{0,32}")
_ID = re.compile(r"[\w.:@-]{1,128}")


class WireError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Event(NamedTuple):
    event: CallEvent
    instance_id: str
    seq: int | None


def _text(data: Mapping[str, Any], name: str, cap: int, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise WireError(f"Missing{name.title().replace('_', '')}", f"{name} is required")
        return ""
    if not isinstance(value, str) or len(value) > cap:
        raise WireError("InvalidParameter", f"{name} must be a string of at most {cap} characters")
    return value


def _context(value: object) -> Mapping[str, str]:
    if value is None:
        return EMPTY_VARS
    if not isinstance(value, dict) or len(value) > MAX_CONTEXT_KEYS:
        raise WireError(
            "InvalidParameter", f"context must be an object of at most {MAX_CONTEXT_KEYS} keys"
        )
    out: dict[str, str] = {}
    for k, v in value.items():
        if len(k) > 64:
            raise WireError("InvalidParameter", "a context key is longer than 64 characters")
        out[k] = v if isinstance(v, str) else orjson.dumps(v).decode()
    return out


def parse_event(call_id: str, body: bytes, default_instance: str) -> Event:
    if not _ID.fullmatch(call_id):
        raise WireError("InvalidParameter", "the call id in the path is not valid")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WireError("InvalidParameter", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WireError("InvalidParameter", "the body must be a JSON object")
    seq = data.get("seq")
    if seq is not None and (type(seq) is not int or seq < 0):
        raise WireError("InvalidParameter", "seq must be a non-negative integer")
    instance_id = _text(data, "instance_id", 128) or default_instance
    if not instance_id:
        raise WireError("MissingInstanceId", "instance_id is required (no default is configured)")
    kind = data.get("type")
    event: CallEvent
    if kind == "start":
        event = CallStarted(
            call_id,
            instance_id,
            _text(data, "calling", 64, required=True),
            _text(data, "called", 64),
            _context(data.get("context")),
        )
    elif kind == "speech":
        confidence = data.get("confidence")
        if confidence is not None and (
            not isinstance(confidence, int | float) or not 0 <= confidence <= 1
        ):
            raise WireError("InvalidParameter", "confidence must be a number from 0 to 1")
        text = _text(data, "text", MAX_TEXT)
        event = UserSaid(call_id, text, None if confidence is None else float(confidence))
    elif kind == "digits":
        digits = _text(data, "digits", MAX_DIGITS)
        if not _DIGITS.fullmatch(digits):
            raise WireError("InvalidParameter", "digits may hold only 0-9, *, # and A-D")
        event = DigitsEntered(call_id, digits.rstrip("#"))
    elif kind == "no_input":
        event = NoInput(call_id)
    elif kind == "end":
        event = CallEnded(call_id, _text(data, "cause", 64) or "NORMAL_CLEARING")
    else:
        raise WireError(
            "InvalidParameter", "type must be one of start, speech, digits, no_input, end"
        )
    return Event(event, instance_id, seq)


def render(call_id: str, seq: int | None, reply: Reply | None) -> bytes:
    if reply is None:
        return orjson.dumps({"call_id": call_id, "seq": seq, "ended": True})
    try:
        params = orjson.loads(reply.action_params)
    except orjson.JSONDecodeError:
        params = {}
    listens = reply.action is Action.BROADCAST and reply.wait_seconds > 0
    return orjson.dumps(
        {
            "call_id": call_id,
            "seq": seq,
            "action": reply.action.value,
            "text": reply.text,
            "interruptible": reply.interruptible,
            "action_params": params,
            "input": {
                "wait_ms": reply.wait_seconds * 1000,
                "max_digits": MAX_DIGITS,
                "terminator": "#",
            }
            if listens
            else None,
        }
    )


def render_error(code: str, message: str) -> bytes:
    return orjson.dumps({"code": code, "message": message})

"""The HTTP front doors' wire formats, for scripted calls.

Each front turns a script's step into the request bytes its clients send:
the RPC API (VoiceNavigator actions in the query string), FreeSWITCH
mod_httapi (the session's fields in a GET) and the generic JSON webhook.
Requests are built once per script as templates holding a fixed-width
placeholder where the call id goes; a turn costs one `bytes.replace`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from bench import gwconfig
from bench.httapi_turn import AUTH as HTTAPI_AUTH
from bench.httapi_turn import PATH as HTTAPI_PATH
from bench.httapi_turn import _fields as httapi_fields
from bench.rpc_turn import CALLING, HOST, percent_encode
from bench.scripts import BALANCE, Script, Step

CALL_ID_WIDTH = 20
PLACEHOLDER = b"Q" * CALL_ID_WIDTH
# In every front's answer to a turn whose backend failed or was late.
FALLBACK_MARK = b"Sorry, our system is busy"


def call_id(tag: str, n: int) -> str:
    """A call id as wide as the placeholder: `tag` (up to 6 characters) and a number."""
    return f"{tag[:6]:-<6}{n:0{CALL_ID_WIDTH - 6}d}"


_PLACE = PLACEHOLDER.decode()


def _rpc(port: int, instance: str) -> Callable[[int, Step], bytes]:
    def build(i: int, step: Step) -> bytes:
        p = {"Format": "JSON", "Version": "2018-06-12", "InstanceId": instance}
        p["ConversationId"] = _PLACE
        if step.kind == "begin":
            p.update(
                Action="BeginDialogue",
                CallingNumber=CALLING,
                InitialContext=f'{{"balance":"{BALANCE}"}}',
            )
        elif step.kind == "say":
            p.update(Action="Dialogue", Utterance=step.text)
        elif step.kind == "digits":
            p.update(Action="CollectedNumber", Number=step.text)
        elif step.kind == "silence":
            p.update(Action="SilenceTimeout")
        else:
            p.update(Action="EndDialogue")
        query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in p.items())
        return (
            f"GET /?{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "User-Agent: ivr-gateway-bench\r\nAccept: */*\r\n\r\n"
        ).encode()

    return build


def _httapi(port: int, instance: str) -> Callable[[int, Step], bytes]:
    def build(i: int, step: Step) -> bytes:
        fields = httapi_fields(_PLACE, port)
        fields[2] = ("instance", instance)
        if step.kind == "begin":
            fields.append(("balance", BALANCE))
        else:
            fields.append(("ivrgw_turn", str(i)))
        if step.kind == "say":
            fields += [("ivrgw_input", step.text), ("input_type", "detected_speech")]
        elif step.kind == "digits":
            fields += [("ivrgw_input", step.text + "#"), ("input_type", "dtmf")]
        elif step.kind == "end":
            fields += [("exiting", "true"), ("hangup_cause", "NORMAL_CLEARING")]
        q = "&".join(f"{k}={quote(v, safe='/')}" for k, v in fields)
        return (
            f"GET {HTTAPI_PATH}?{q} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"User-Agent: mod_httapi/1.0\r\nAccept: */*\r\nCookie: \r\n"
            f"Authorization: {HTTAPI_AUTH}\r\n\r\n"
        ).encode()

    return build


def webhook_event(i: int, step: Step, instance: str) -> dict[str, object]:
    """The webhook's JSON event for a step (docs/webhook.md)."""
    event: dict[str, object] = {"instance_id": instance, "seq": i}
    if step.kind == "begin":
        event.update(type="start", calling=CALLING, context={"balance": BALANCE})
    elif step.kind == "say":
        event.update(type="speech", text=step.text, confidence=0.9)
    elif step.kind == "digits":
        event.update(type="digits", digits=step.text + "#")
    elif step.kind == "silence":
        event.update(type="no_input")
    else:
        event.update(type="end", cause="NORMAL_CLEARING")
    return event


def webhook_request(port: int, call: str, event: dict[str, object]) -> bytes:
    """`POST /v1/calls/{call}/events` with the bench's bearer token."""
    body = orjson.dumps(event)
    return (
        f"POST /v1/calls/{call}/events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {gwconfig.BEARER}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _webhook(port: int, instance: str) -> Callable[[int, Step], bytes]:
    def build(i: int, step: Step) -> bytes:
        return webhook_request(port, _PLACE, webhook_event(i, step, instance))

    return build


BUILDERS: dict[str, Callable[[int, str], Callable[[int, Step], bytes]]] = {
    "rpc": _rpc,
    "httapi": _httapi,
    "webhook": _webhook,
}


@dataclass(frozen=True, slots=True)
class Templates:
    """Every script's requests for one front, port and instance, with the placeholder."""

    by_script: tuple[tuple[bytes, ...], ...]

    @classmethod
    def build(cls, front: str, port: int, plays: tuple[Script, ...], instance: str) -> Templates:
        make = BUILDERS[front](port, instance)
        return cls(tuple(tuple(make(i, s) for i, s in enumerate(p.steps)) for p in plays))

"""ARI's wire shapes (pbx-protocols.md §3), pure: events in, what to do out.

Rules of this file:
- `parse_event` turns one events-websocket message into one of the typed
  events below, or None for an event the adapter does not act on. A message
  that is not JSON or lacks the fields an event needs is `AriWireError`.
- `call_started` maps a StasisStart to the CallStarted the bridge runs:
  CallingNumber is `caller.number`, CalledNumber `dialplan.exten`; the first
  Stasis argument without `=` names the instance, `k=v` arguments become
  InitialContext.
- `destination` maps a transfer's ActionParams through the config table to
  a `continue` (context, extension, priority) or a `redirect` (endpoint).
- `media_params` picks media a reply names itself (`sound:`, `tone:`,
  `digits:` in ActionParams `media`), which pass straight through.
- RecordingStarted, RecordingFinished and RecordingFailed become a
  `RecordingEvent` keyed by the recorded channel (the LiveRecording's
  `target_uri`, `channel:<id>`); a bridge's recording is not ours (None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

import orjson

from gateway.calls.events import CallStarted
from gateway.dialogue.operations import EMPTY_VARS, Action, Reply

MAX_CONTEXT_KEYS = 64
_PASSTHROUGH = ("sound:", "tone:", "digits:", "number:", "characters:", "recording:")
_DESTINATION = re.compile(
    r"(?P<context>[\w-]{1,64}),(?P<exten>[\w*#+-]{1,64}),(?P<priority>\d{1,5})"
)
_ENDPOINT = re.compile(r"redirect:(?P<endpoint>[\w./@:-]{1,128})")


class AriWireError(Exception):
    pass


class StasisStart(NamedTuple):
    channel_id: str
    state: str
    caller: str
    exten: str
    args: tuple[str, ...]
    name: str = ""  # the channel's name: "PJSIP/1000-00000001", "Snoop/<id>-00000001"


class Dtmf(NamedTuple):
    channel_id: str
    digit: str


class PlaybackFinished(NamedTuple):
    channel_id: str
    playback_id: str
    state: str


class CallGone(NamedTuple):
    """StasisEnd or ChannelDestroyed: the call has left the application."""

    channel_id: str
    kind: str


class RecordingEvent(NamedTuple):
    """A LiveRecording's state changed: recording, done, canceled or failed."""

    channel_id: str
    name: str
    state: str
    cause: str


Event = StasisStart | Dtmf | PlaybackFinished | CallGone | RecordingEvent
_RECORDING_EVENTS = frozenset({"RecordingStarted", "RecordingFinished", "RecordingFailed"})


def _channel(data: Mapping[str, object]) -> Mapping[str, object]:
    channel = data.get("channel")
    if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
        raise AriWireError(f"{data.get('type')} without a channel id")
    return channel


def _text(obj: Mapping[str, object], *path: str) -> str:
    value: object = obj
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else ""


def parse_event(raw: str | bytes) -> Event | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AriWireError("an event that is not JSON") from None
    if not isinstance(data, dict):
        raise AriWireError("an event that is not a JSON object")
    kind = data.get("type")
    if kind == "StasisStart":
        channel = _channel(data)
        args = data.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise AriWireError("StasisStart args must be a list of strings")
        return StasisStart(
            str(channel["id"]),
            _text(channel, "state"),
            _text(channel, "caller", "number"),
            _text(channel, "dialplan", "exten"),
            tuple(args),
            _text(channel, "name"),
        )
    if kind == "ChannelDtmfReceived":
        digit = data.get("digit")
        if not isinstance(digit, str) or len(digit) != 1:
            raise AriWireError("ChannelDtmfReceived without a digit")
        return Dtmf(str(_channel(data)["id"]), digit)
    if kind == "PlaybackFinished":
        playback = data.get("playback")
        if not isinstance(playback, dict) or not isinstance(playback.get("id"), str):
            raise AriWireError("PlaybackFinished without a playback id")
        target = _text(playback, "target_uri")
        channel_id = target.removeprefix("channel:") if target.startswith("channel:") else ""
        return PlaybackFinished(channel_id, str(playback["id"]), _text(playback, "state"))
    if kind in ("StasisEnd", "ChannelDestroyed"):
        return CallGone(str(_channel(data)["id"]), str(kind))
    if kind in _RECORDING_EVENTS:
        recording = data.get("recording")
        if not isinstance(recording, dict) or not isinstance(recording.get("name"), str):
            raise AriWireError(f"{kind} without a recording name")
        target = _text(recording, "target_uri")
        if not target.startswith("channel:"):
            return None
        return RecordingEvent(
            target.removeprefix("channel:"),
            str(recording["name"]),
            _text(recording, "state"),
            _text(recording, "cause"),
        )
    return None


def call_started(event: StasisStart, default_instance: str) -> tuple[str, CallStarted]:
    """The instance id and the CallStarted for a StasisStart."""
    instance = default_instance
    context: dict[str, str] = {}
    for n, arg in enumerate(event.args):
        key, sep, value = arg.partition("=")
        if sep:
            if len(context) < MAX_CONTEXT_KEYS and 0 < len(key) <= 64:
                context[key] = value
        elif n == 0 and arg:
            instance = arg
    started = CallStarted(
        event.channel_id, instance, event.caller, event.exten, context or EMPTY_VARS
    )
    return instance, started


class Continue(NamedTuple):
    context: str
    extension: str
    priority: int


class Redirect(NamedTuple):
    endpoint: str


Destination = Continue | Redirect


def parse_destination(value: str) -> Destination | None:
    """`context,exten,priority` or `redirect:<endpoint>`; None if neither."""
    m = _DESTINATION.fullmatch(value)
    if m:
        return Continue(m["context"], m["exten"], int(m["priority"]))
    m = _ENDPOINT.fullmatch(value)
    if m:
        return Redirect(m["endpoint"])
    return None


def _params(reply: Reply) -> Mapping[str, object]:
    try:
        value = orjson.loads(reply.action_params)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def destination(
    reply: Reply,
    agents: Mapping[str, Destination],
    ivrs: Mapping[str, Destination],
    default_agent: Destination | None,
    default_ivr: Destination | None,
) -> Destination | None:
    params = _params(reply)
    keys: tuple[str, ...]
    if reply.action is Action.TRANSFER_TO_AGENT:
        table, keys, default = agents, ("skillGroupId",), default_agent
    else:
        table, keys, default = ivrs, ("ivr", "route", "ivrName"), default_ivr
    for key in keys:
        value = params.get(key)
        if isinstance(value, int | str) and not isinstance(value, bool) and str(value):
            return table.get(str(value), default)
    return default


def media_params(reply: Reply) -> list[str]:
    """Media the reply names itself (ActionParams `media`: a URI or a list)."""
    media = _params(reply).get("media")
    items = [media] if isinstance(media, str) else media if isinstance(media, list) else []
    return [m for m in items if isinstance(m, str) and m.startswith(_PASSTHROUGH)]


def passthrough(text: str) -> bool:
    """Reply text that is itself an ARI media URI, played as it is."""
    return text.startswith(_PASSTHROUGH) and " " not in text

"""The FreeSWITCH mod_httapi codec: request fields -> CallEvent, Reply -> XML.

Pure functions over plain values: no I/O, no clock. The transport decodes one
httapi request (GET query, urlencoded or multipart body) into `fields`, calls
`parse_request`, and answers with `render` (sent as CONTENT_TYPE) or, for the
exiting request, `render_ok`. The facts are from reference/pbx-protocols.md,
read from FreeSWITCH's source; the § numbers below point into it.

Rules of this file, requests (§1.2, §1.5, §7):
- `session_id` is the call id. Missing: MissingSessionId; longer than 256
  characters or unprintable: InvalidSessionId. The instance is the dialplan
  param `instance` (`{instance=demo,url=...}`), else the adapter's default;
  neither: MissingInstance.
- Every document sets the persistent param `ivrgw_turn` (§1.3: FreeSWITCH sends
  it back on every later request). A request without it is the call's first:
  CallStarted. Its context is the dialplan's own params: not mod_httapi's
  fields, not `Caller-*`, `variable_*` or `ivrgw_*`. At most 64 are kept, in
  order. A key over 64 characters, or a value over 1024, is dropped, never cut.
  An `ivrgw_turn` that is not a decimal number is InvalidTurn.
- `exiting=true` is CallEnded. Its cause is `hangup_cause` or
  `variable_hangup_cause` when that is a cause name (A-Z and _), else
  NORMAL_CLEARING.
- Otherwise the request carries the last prompt's input, posted once as
  `ivrgw_input` plus `input_type` (§1.5):
  - dtmf: DigitsEntered. `#` is removed. Anything but 1 to 32 of `0-9 * A-D`
    becomes "", which the navigator counts as unrecognized.
  - detected_speech: parse_recognizer. UserSaid (text "" on nomatch), or
    NoInput when the recognizer heard nothing.
  - invalid, or no input at all: NoInput.

Recognizer results (§5), `parse_recognizer`, which never raises:
- NLSML (any namespace) and the pocketsphinx form: the first
  <interpretation>'s <input> text, whitespace collapsed. Its confidence (on
  <interpretation>, else on <input>) is normalised to [0, 1]: values in (1, 100]
  are percent. Anything else gives no confidence.
- <noinput/> is noinput. <nomatch/>, an empty <input>, or no <interpretation>
  is nomatch.
- `Completion-Cause: NNN` (mod_unimrcp without a body): 002 no-input-timeout
  is noinput; every other cause is nomatch (RFC 6787 §9.4.11: 001 no-match,
  015 no-match-maxtime, the failures).
- Text not starting with `<` is speech, confidence None. Empty text is noinput.
- Refused as nomatch, before any parsing: over 16 KiB, a DOCTYPE or ENTITY
  declaration (so entities are never expanded), text that is not valid
  Unicode. Malformed XML is nomatch too.

Documents (§1.3-§1.5):
- `<document type="xml/freeswitch-httapi">`, then `<params>` with opts.params
  (keys that are not `[A-Za-z_][A-Za-z0-9_]*` are skipped), then `<work>`.
- Text is cleaned before it goes into an attribute: line breaks and tabs
  become one space; characters XML cannot carry, and other controls, are
  removed. Then it is escaped, always in double quotes.
- Audio rule: trimmed text with no whitespace that is an http(s)://,
  file_string://, tone_stream:// or silence_stream:// URL, or a path (absolute,
  or relative to the channel's sound_prefix) ending in .wav .mp3 .ogg .gsm
  .ulaw .alaw, is played with <playback file>. Anything else is spoken with
  <speak engine voice text>. `$${sounds_dir}` is not special: preprocessor
  variables are expanded only when FreeSWITCH loads its config, and
  mod_httapi never expands attributes.
- Broadcast with wait_seconds > 0 listens for input after the prompt:
  - interruptible: the prompt tag itself carries the input attributes (name,
    terminators `#`, digit-timeout, input-timeout = wait) and the binds;
  - not interruptible, or no text: the prompt plays whole, then a
    `<pause milliseconds=wait>` carries them. The pause's milliseconds replace
    input-timeout there, so it is not written.
  - The binds are one exact bind per key 0-9 and `*`, plus
    `~^[0-9*]{1,N}#?$` with strip `#` (see _binds for why).
- ASR (asr_engine and asr_grammar both set): mod_httapi runs a recognizer only
  on <playback> (parse_playback; `speak` and `pause` ignore asr-*). So:
  - an interruptible prompt is `<playback file="say:TEXT" asr-engine
    asr-grammar ...>`. `say:` speaks through the channel variables tts_engine
    and tts_voice, so the document sets them in <variables>. That needs the
    profile's set-vars permission for those two names; otherwise the dialplan
    must set them.
  - the silent wait is `<playback file="silence_stream://wait" ...>`.
- Broadcast with no wait, and RedirectToPage: the prompt only. When it ends,
  FreeSWITCH asks again with no input, which is NoInput.
- TransferToAgent and TransferToIVR: the prompt, then `<dial>EXT</dial>`, or
  `<execute application="transfer" data="EXT XML context"/>` (needs
  execute-apps with transfer allowed). EXT comes from the Transfers table,
  keyed by ActionParams skillGroupId, or by route/ivr/ivrName, else the
  default. An unknown key with no default, or an extension that is not
  `[\\w*#+@.:-]{1,64}`, has no destination: the prompt, then
  `<hangup cause="NORMAL_CLEARING"/>`. The caller is never left in silence.
- HangUp: the prompt, then `<hangup cause>`. The cause is ActionParams
  `cause` when it is `[A-Z_]{1,64}`, else opts.hangup_cause.
- ActionParams that are not a JSON object count as {}. Empty text has no
  prompt tag. A document with nothing to do holds <continue/>, because an
  empty <work> would end httapi.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, NamedTuple
from xml.sax.saxutils import escape

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

INPUT_NAME = "ivrgw_input"
TURN_PARAM = "ivrgw_turn"
CONTENT_TYPE = "text/xml; charset=utf-8"
DOCUMENT_TYPE = "xml/freeswitch-httapi"

MAX_SESSION_ID_CHARS = 256
MAX_CONTEXT_KEYS = 64
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 1024
MAX_RECOGNIZER_BYTES = 16 * 1024
MAX_DIGITS = 32


class CodecError(Exception):
    """A request the codec cannot turn into an event; `code` names the problem."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Parsed(NamedTuple):
    event: CallEvent
    instance_id: str
    # The gateway's turn counter echoed back by FreeSWITCH; None on the first request.
    turn: int | None


class Recognized(NamedTuple):
    kind: Literal["speech", "nomatch", "noinput"]
    text: str
    confidence: float | None


@dataclass(frozen=True, slots=True)
class Transfers:
    """Where TransferToAgent and TransferToIVR send the call; validated at start-up."""

    agents: Mapping[str, str]  # skillGroupId -> extension
    ivrs: Mapping[str, str]  # IVR name (ActionParams route, ivr or ivrName) -> extension
    default_agent: str = ""  # "" -> no destination
    default_ivr: str = ""
    mode: Literal["dial", "execute"] = "dial"
    context: str = "default"

    def __post_init__(self) -> None:
        if self.mode not in ("dial", "execute"):
            raise ValueError(f"transfer mode must be dial or execute, not {self.mode!r}")
        if not _CONTEXT_NAME.fullmatch(self.context):
            raise ValueError(f"transfer context {self.context!r} is not a dialplan context name")
        named = [*self.agents.items(), *self.ivrs.items()]
        # The defaults may be "" (no destination); a table entry may not.
        defaults = (("default_agent", self.default_agent), ("default_ivr", self.default_ivr))
        named += [(key, extension) for key, extension in defaults if extension]
        for key, extension in named:
            if not valid_extension(extension):
                raise ValueError(f"transfer {key!r}: {extension!r} is not an extension")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    engine: str  # TTS engine for <speak>: the instance's or the adapter's default
    voice: str
    params: Mapping[str, str]  # persistent params for <params> (ivrgw_turn, instance)
    transfers: Transfers
    asr_engine: str = ""  # both set: speech input on the listening tag
    asr_grammar: str = ""
    digit_timeout_ms: int = 3000
    max_digits: int = 32
    hangup_cause: str = "NORMAL_CLEARING"
    # > 0: start a background recording of the call, at most this many
    # seconds; FreeSWITCH uploads it with the exiting request (§1.2, §1.4).
    record_call_seconds: int = 0


# -- requests ---------------------------------------------------------------

# Fields mod_httapi sends or reads itself (§1.1, §1.2): never the dialplan's context.
_HTTAPI_FIELDS = ("session_id", "url", "method", "hostname", "exiting", "input_type")
# mod_httapi control params a dialplan may set.
_HTTAPI_CONTROL = ("httapi_profile", "HTTAPI_SESSION_ID", "user_agent")
_NOT_CONTEXT = frozenset(
    (*_HTTAPI_FIELDS, *_HTTAPI_CONTROL, "full_channel_data_on_every_req", "instance", INPUT_NAME)
)
_NOT_CONTEXT_PREFIXES = ("Caller-", "variable_", "ivrgw_")
_TURN = re.compile(r"[0-9]{1,9}")
_CAUSE = re.compile(r"[A-Z_]{1,64}")
_DIGITS = re.compile(r"[0-9*A-D]{1,32}")


def parse_request(fields: Mapping[str, str], default_instance: str) -> Parsed:
    """One httapi request's fields -> the event it reports, or CodecError."""
    call_id = fields.get("session_id", "")
    if not call_id:
        raise CodecError("MissingSessionId", "the request has no session_id")
    if len(call_id) > MAX_SESSION_ID_CHARS or not call_id.isprintable():
        raise CodecError("InvalidSessionId", "session_id is too long or not printable")
    instance_id = fields.get("instance") or default_instance
    if not instance_id:
        raise CodecError("MissingInstance", "no instance param and no default instance")
    raw_turn = fields.get(TURN_PARAM)
    turn = None
    if raw_turn is not None:
        if not _TURN.fullmatch(raw_turn):
            raise CodecError("InvalidTurn", f"{TURN_PARAM} is not a decimal number")
        turn = int(raw_turn)

    event: CallEvent
    if fields.get("exiting", "").lower() == "true":
        cause = fields.get("hangup_cause") or fields.get("variable_hangup_cause") or ""
        event = CallEnded(call_id, cause if _CAUSE.fullmatch(cause) else "NORMAL_CLEARING")
    elif turn is None:
        # No turn of ours echoed back: the gateway has not answered this call yet.
        calling = fields.get("Caller-Caller-ID-Number") or fields.get("Caller-ANI") or ""
        called = fields.get("Caller-Destination-Number", "")
        event = CallStarted(call_id, instance_id, calling, called, _context(fields))
    else:
        event = _input(call_id, fields)
    return Parsed(event, instance_id, turn)


def _context(fields: Mapping[str, str]) -> Mapping[str, str]:
    """The dialplan's own params, capped; extras are dropped, never an error."""
    context: dict[str, str] = {}
    for key, value in fields.items():
        if (
            not key
            or key in _NOT_CONTEXT
            or key.startswith(_NOT_CONTEXT_PREFIXES)
            or len(key) > MAX_CONTEXT_KEY_CHARS
            or len(value) > MAX_CONTEXT_VALUE_CHARS
        ):
            continue
        context[key] = value
        if len(context) == MAX_CONTEXT_KEYS:
            break
    return MappingProxyType(context) if context else EMPTY_VARS


def _input(call_id: str, fields: Mapping[str, str]) -> CallEvent:
    input_type = fields.get("input_type", "")
    value = fields.get(INPUT_NAME, "")
    if input_type == "dtmf":
        digits = value.replace("#", "")
        return DigitsEntered(call_id, digits if _DIGITS.fullmatch(digits) else "")
    if input_type == "detected_speech":
        result = parse_recognizer(value)
        if result.kind == "noinput":
            return NoInput(call_id)
        # nomatch is an utterance nobody understood: UserSaid with empty text.
        return UserSaid(call_id, result.text, result.confidence)
    # input_type=invalid (only with error-file), or the prompt timed out with nothing posted.
    return NoInput(call_id)


# -- recognizer results -----------------------------------------------------

_NOINPUT = Recognized("noinput", "", None)
_NOMATCH = Recognized("nomatch", "", None)
_COMPLETION_CAUSE = re.compile(r"Completion-Cause:\s*([0-9]{1,3})", re.IGNORECASE)
# MRCP recognizer completion causes (RFC 6787 §9.4.11): only 002
# no-input-timeout means nothing was heard. 015 is no-match-maxtime.
_NO_INPUT_CAUSES = frozenset({2})
_DECLARATION = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_recognizer(raw: str) -> Recognized:
    """A recognizer's raw result (NLSML, pocketsphinx XML, Completion-Cause, text)."""
    if len(raw) > MAX_RECOGNIZER_BYTES:
        return _NOMATCH
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:
        # Lone surrogates: not text any recognizer produced.
        return _NOMATCH
    if size > MAX_RECOGNIZER_BYTES:
        return _NOMATCH
    text = raw.strip()
    if not text:
        return _NOINPUT
    if text[0] != "<":
        cause = _COMPLETION_CAUSE.match(text)
        if cause:
            return _NOINPUT if int(cause.group(1)) in _NO_INPUT_CAUSES else _NOMATCH
        words = _squash(text)
        return Recognized("speech", words, None) if words else _NOMATCH
    # Refuse a DTD before the parser sees it: no entity is ever declared, so none expands.
    if _DECLARATION.search(text):
        return _NOMATCH
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return _NOMATCH
    return _from_tree(root)


def _from_tree(root: ET.Element) -> Recognized:
    interpretation = _first(root, "interpretation")
    scope = root if interpretation is None else interpretation
    names = {_local(element.tag) for element in scope.iter()}
    if "noinput" in names:
        return _NOINPUT
    if "nomatch" in names or interpretation is None:
        return _NOMATCH
    spoken = _first(interpretation, "input")
    if spoken is None:
        return _NOMATCH
    words = _squash("".join(spoken.itertext()))
    if not words:
        return _NOMATCH
    confidence = interpretation.get("confidence") or spoken.get("confidence")
    return Recognized("speech", words, _confidence(confidence))


def _local(tag: object) -> str:
    """A tag without its namespace; "" for comments and processing instructions."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _first(root: ET.Element, name: str) -> ET.Element | None:
    for element in root.iter():
        if _local(element.tag) == name:
            return element
    return None


def _confidence(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    if value <= 1:
        return value
    # pocketsphinx and some MRCP servers give percent.
    return value / 100 if value <= 100 else None


def _squash(text: str) -> str:
    return " ".join(_ILLEGAL.sub("", text).split())


# -- documents --------------------------------------------------------------

_EXTENSION = re.compile(r"[\w*#+@.:-]{1,64}", re.ASCII)
_CONTEXT_NAME = re.compile(r"[\w.-]{1,64}", re.ASCII)
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_AUDIO = re.compile(
    r"(?:https?|file_string|tone_stream|silence_stream)://\S+"
    r"|/?[\w.-]+(?:/[\w.-]+)*\.(?:wav|mp3|ogg|gsm|ulaw|alaw)",
    re.IGNORECASE,
)
# Not allowed in XML 1.0, or control characters a prompt has no use for.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_BREAKS = re.compile(r" *[\t\r\n][\t\r\n ]*")
_QUOTE = {'"': "&quot;"}
_IN2 = " " * 4  # a tag inside <params>, <variables> or <work>
_IN3 = " " * 6  # a bind inside its tag


def valid_extension(value: str) -> bool:
    """Whether `value` may be a transfer destination (`[\\w*#+@.:-]{1,64}`, ASCII)."""
    return _EXTENSION.fullmatch(value) is not None


def _binds(max_digits: int) -> str:
    # mod_httapi collects digits only through <bind> (pbx-protocols §1.5), and the
    # digit machine (switch_ivr_dmachine_check_match) decides:
    # - a regex that is the only bind fires at its first match (`~\d+` on the first
    #   key), so the exact per-key binds are there to keep the regex waiting;
    # - while a regex bind exists, an exact bind matches only on the digit timeout:
    #   one key then silence gives that key;
    # - the regex is tested before the `#` terminator is cut off, and the entry then
    #   counts as timed out: `#?` accepts "12#" at once and "12" at the timeout.
    # strip="#" is a second guard (it cuts at the first `#`). One regex bind only:
    # several are unverified (§6.8).
    keys = [f"{_IN3}<bind>{key}</bind>" for key in "0123456789*"]
    entry = f'{_IN3}<bind strip="#">~^[0-9*]{{1,{max_digits}}}#?$</bind>'
    return "\n".join([*keys, entry])


_BINDS = {n: _binds(n) for n in range(1, MAX_DIGITS + 1)}


# Cached: an IVR says the same prompts and settings over and over, and these
# run several times per document (regular expressions and escaping).
@lru_cache(maxsize=4096)
def _clean(text: str) -> str:
    return _ILLEGAL.sub("", _BREAKS.sub(" ", text))


@lru_cache(maxsize=4096)
def _attr(value: str) -> str:
    return '"' + escape(_clean(value), _QUOTE) + '"'


@lru_cache(maxsize=4096)
def _element_text(value: str) -> str:
    return escape(_clean(value))


@lru_cache(maxsize=4096)
def _is_audio(text: str) -> bool:
    return bool(text) and _AUDIO.fullmatch(text) is not None


@lru_cache(maxsize=256)
def _param_name(key: str) -> bool:
    return _PARAM_NAME.fullmatch(key) is not None


def render(reply: Reply, opts: RenderOptions, params: Mapping[str, str] | None = None) -> bytes:
    """The httapi document that plays `reply` and does its action (rules above).

    `params`, when given, replaces `opts.params`: the per-turn values, so the
    caller can keep one RenderOptions per instance.
    """
    text = _clean(reply.text).strip()
    audio = _is_audio(text)
    work: list[str] = []
    say_vars = False
    action = reply.action
    if action is Action.BROADCAST and reply.wait_seconds > 0:
        say_vars = _prompt_and_listen(work, text, audio, reply, opts)
    else:
        if text:
            work.append(_tag(*_prompt(text, audio, opts)))
        if action is Action.TRANSFER_TO_AGENT or action is Action.TRANSFER_TO_IVR:
            work.append(_transfer(reply, opts.transfers))
        elif action is Action.HANG_UP:
            work.append(_hangup(_hangup_cause(reply, opts)))
        # Broadcast without a wait and RedirectToPage: the prompt alone. When it
        # ends, FreeSWITCH asks again with no input.
    if opts.record_call_seconds > 0:
        work.insert(
            0, f'{_IN2}<recordCall limit="{opts.record_call_seconds}" name="recorded_file"/>'
        )
    if not work:
        # Nothing to play or do. An empty <work> would end httapi (§1.3).
        work.append(f"{_IN2}<continue/>")
    return _document(work, opts, say_vars, opts.params if params is None else params)


def render_ok() -> tuple[str, bytes]:
    """The answer to the exiting request, whose body FreeSWITCH ignores (§1.2)."""
    return "text/plain", b"OK"


def _prompt(text: str, audio: bool, opts: RenderOptions) -> tuple[str, str]:
    """A prompt tag's name and attributes, listening for nothing."""
    if audio:
        return "playback", f" file={_attr(text)}"
    voice = f" voice={_attr(opts.voice)}" if opts.voice else ""
    return "speak", f" engine={_attr(opts.engine)}{voice} text={_attr(text)}"


def _prompt_and_listen(
    work: list[str], text: str, audio: bool, reply: Reply, opts: RenderOptions
) -> bool:
    """Append the prompt and the tag that collects the input; True if `say:` needs TTS vars."""
    wait_ms = reply.wait_seconds * 1000
    binds = _BINDS[min(max(opts.max_digits, 1), MAX_DIGITS)]
    digit_timeout = max(opts.digit_timeout_ms, 1)
    listen = f' name="{INPUT_NAME}" terminators="#" digit-timeout="{digit_timeout}"'
    asr = ""
    if opts.asr_engine and opts.asr_grammar:
        asr = f" asr-engine={_attr(opts.asr_engine)} asr-grammar={_attr(opts.asr_grammar)}"
    if text and reply.interruptible:
        # The prompt itself listens: a key (or, with ASR, speech) cuts it short.
        timeout = f' input-timeout="{wait_ms}"'
        if asr:
            # Only <playback> runs a recognizer; a spoken prompt goes through say:.
            file = text if audio else f"say:{text}"
            work.append(_tag("playback", f" file={_attr(file)}{asr}{listen}{timeout}", binds))
            return not audio
        name, attrs = _prompt(text, audio, opts)
        work.append(_tag(name, f"{attrs}{listen}{timeout}", binds))
        return False
    # Not interruptible, or nothing to say: the prompt plays whole, then a silent wait listens.
    if text:
        work.append(_tag(*_prompt(text, audio, opts)))
    if asr:
        attrs = f' file="silence_stream://{wait_ms}"{asr}{listen} input-timeout="{wait_ms}"'
        work.append(_tag("playback", attrs, binds))
    else:
        work.append(_tag("pause", f' milliseconds="{wait_ms}"{listen}', binds))
    return False


def _tag(name: str, attrs: str, binds: str = "") -> str:
    if not binds:
        return f"{_IN2}<{name}{attrs}/>"
    return f"{_IN2}<{name}{attrs}>\n{binds}\n{_IN2}</{name}>"


def _hangup(cause: str) -> str:
    return f'{_IN2}<hangup cause="{cause}"/>'


def _hangup_cause(reply: Reply, opts: RenderOptions) -> str:
    cause = _action_params(reply.action_params).get("cause")
    if isinstance(cause, str) and _CAUSE.fullmatch(cause):
        return cause
    return opts.hangup_cause if _CAUSE.fullmatch(opts.hangup_cause) else "NORMAL_CLEARING"


def _action_params(raw: str) -> Mapping[str, object]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _transfer(reply: Reply, transfers: Transfers) -> str:
    params = _action_params(reply.action_params)
    if reply.action is Action.TRANSFER_TO_AGENT:
        extension = _lookup(transfers.agents, params, ("skillGroupId",), transfers.default_agent)
    else:
        keys = ("route", "ivr", "ivrName")
        extension = _lookup(transfers.ivrs, params, keys, transfers.default_ivr)
    if not valid_extension(extension):
        # No destination: end the call rather than leave the caller in silence.
        return _hangup("NORMAL_CLEARING")
    if transfers.mode == "execute":
        data = f"{extension} XML {transfers.context}"
        return f'{_IN2}<execute application="transfer" data={_attr(data)}/>'
    return f"{_IN2}<dial>{escape(extension)}</dial>"


def _lookup(
    table: Mapping[str, str], params: Mapping[str, object], keys: tuple[str, ...], default: str
) -> str:
    """The extension for the first of `keys` present in ActionParams, else `default`."""
    for key in keys:
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value:
            return table.get(value, default)
    return default


def _document(
    work: list[str], opts: RenderOptions, say_vars: bool, params_in: Mapping[str, str]
) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<document type="{DOCUMENT_TYPE}">']
    params = [
        f"{_IN2}<{key}>{_element_text(value)}</{key}>"
        for key, value in params_in.items()
        if _param_name(key)
    ]
    lines += ["  <params>", *params, "  </params>"] if params else ["  <params/>"]
    if say_vars:
        lines += [
            "  <variables>",
            f"{_IN2}<tts_engine>{_element_text(opts.engine)}</tts_engine>",
            f"{_IN2}<tts_voice>{_element_text(opts.voice)}</tts_voice>",
            "  </variables>",
        ]
    lines += ["  <work>", *work, "  </work>", "</document>", ""]
    return "\n".join(lines).encode("utf-8")

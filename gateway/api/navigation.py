"""Navigation and TTS config actions (seed §9, §10), and AuditTTSVoice.

DescribeNavigationConfig answers with every table of the instance as it is
served now. The Modify*Config actions each replace the parameters they are
given in one table of the instance's document and leave the rest: a
parameter left out keeps its current value, one given empty sets it empty
(and is refused where empty is not allowed). The seed's required parameters
are required. Values are validated as an instance file's are
(gateway.dialogue.config), and a change applies to conversations that
begin after it (gateway.api.editing). docs/management.md lists every
parameter and range.

A list parameter (Utterances ...) is a JSON array of strings, or the
SDKs' flat form `Utterances.1`, `Utterances.2` ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway import errors
from gateway.api.actions import MAX_ID_CHARS, Params, integer, optional, required
from gateway.api.editing import Document, editor_of
from gateway.api.manage import Context, Fields, Handler, Request
from gateway.dialogue.config import (
    MAX_PROMPT_CHARS,
    MAX_THRESHOLD,
    MAX_TIMEOUT_SECONDS,
    TTSConfig,
)
from gateway.store.instances import Instance
from gateway.tts import TtsError
from gateway.tts.espeak import EspeakSynthesizer
from gateway.tts.service import MAX_TEXT_CHARS, TtsService

MAX_TRIGGER_CHARS = 200
MAX_VOICE_CHARS = 64
MAX_PHRASES = 200
MAX_PHRASE_CHARS = 200
SPEECH_RATE = (-500, 500)
VOLUME = (0, 100)
# Auditions: 16 kHz WAV, the oldest removed past this many bytes on disk.
AUDITION_RATE = 16_000
AUDITION_MAX_BYTES = 256 << 20


# -- parameters -------------------------------------------------------------


def _boolean(params: Params, name: str) -> bool:
    value = params[name].strip().lower()
    if value not in ("true", "false"):
        raise errors.InvalidParameter.named(name, "must be true or false")
    return value == "true"


def _phrases(params: Params, name: str) -> list[str] | None:
    """A list parameter: a JSON array of strings, or name.1, name.2 ...; None if absent."""
    raw = params.get(name)
    if raw is not None:
        try:
            value = orjson.loads(raw) if raw.strip() else []
        except orjson.JSONDecodeError:
            raise errors.InvalidParameter.named(name, "not a JSON array") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise errors.InvalidParameter.named(name, "must be a JSON array of strings")
    else:
        prefix = name + "."
        numbered = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        if not numbered:
            return None
        if not all(k.isdigit() for k in numbered):
            raise errors.InvalidParameter.named(name, f"list items are {name}.1, {name}.2 ...")
        value = [numbered[k] for k in sorted(numbered, key=int)]
    if len(value) > MAX_PHRASES:
        raise errors.InvalidParameter.named(name, f"more than {MAX_PHRASES} items")
    if any(len(v) > MAX_PHRASE_CHARS for v in value):
        raise errors.InvalidParameter.named(name, f"an item longer than {MAX_PHRASE_CHARS}")
    return value


@dataclass(frozen=True, slots=True)
class Field:
    """One parameter of a Modify*Config action: how to read it and whether it is required."""

    name: str
    read: Callable[[Params, str], Any]
    required: bool = False
    # The key in the document's table, when it is not the parameter's name.
    key: str = ""

    def present(self, params: Params) -> bool:
        if self.read is _phrases:
            return self.name in params or any(k.startswith(self.name + ".") for k in params)
        return self.name in params


def _text(cap: int) -> Callable[[Params, str], str]:
    return lambda params, name: optional(params, name, cap)


def _int(low: int, high: int) -> Callable[[Params, str], int]:
    return lambda params, name: integer(params, name, low, high)


PROMPT = _text(MAX_PROMPT_CHARS)
# Actions, action params and source types are checked when the document is parsed.
WORD = _text(MAX_TRIGGER_CHARS)
PARAMS_JSON = _text(MAX_PROMPT_CHARS)
THRESHOLD = _int(1, MAX_THRESHOLD)

TABLES: Mapping[str, tuple[str, tuple[Field, ...]]] = {
    "ModifyGreetingConfig": (
        "GreetingConfig",
        (
            Field("GreetingWords", PROMPT, required=True),
            Field("SourceType", WORD),
            Field("IntentTrigger", WORD),
            Field("Interruptible", _boolean),
        ),
    ),
    "ModifyUnrecognizingConfig": (
        "UnrecognizingConfig",
        (
            Field("Prompt", PROMPT, required=True),
            Field("Threshold", THRESHOLD, required=True),
            Field("FinalPrompt", PROMPT, required=True),
            Field("FinalAction", WORD, required=True),
            Field("FinalActionParams", PARAMS_JSON),
        ),
    ),
    "ModifySilenceTimeoutConfig": (
        "SilenceTimeoutConfig",
        (
            Field("Prompt", PROMPT, required=True),
            Field("Timeout", _int(1, MAX_TIMEOUT_SECONDS), required=True),
            Field("Threshold", THRESHOLD, required=True),
            Field("FinalPrompt", PROMPT, required=True),
            Field("FinalAction", WORD, required=True),
            Field("FinalActionParams", PARAMS_JSON),
            # Required in the seed's table, absent from its own example: optional here.
            Field("SourceType", WORD),
            Field("IntentTrigger", WORD),
        ),
    ),
    "ModifyRepeatingConfig": (
        "RepeatingConfig",
        (Field("Utterances", _phrases, required=True),),
    ),
    "ModifyAskingBackConfig": (
        "AskingBackConfig",
        (
            Field("Enabled", _boolean, required=True),
            Field("Prompt", PROMPT),
            Field("EnableNegativeFeedback", _boolean),
            Field("NegativeFeedbackUtterances", _phrases),
            Field("NegativeFeedbackPrompt", PROMPT),
            Field("NegativeFeedbackAction", WORD),
            Field("NegativeFeedbackActionParams", PARAMS_JSON),
        ),
    ),
    "ModifyComplainingConfig": (
        "ComplainingConfig",
        (
            Field("Utterances", _phrases, required=True),
            Field("Prompt", PROMPT),
            # `Action` is the RPC API's own parameter: these take the names of
            # the seed's field table for ComplainingConfig instead.
            Field("FinalAction", WORD, key="Action"),
            Field("FinalActionParams", PARAMS_JSON, key="ActionParams"),
        ),
    ),
    "ModifyTTSConfig": (
        "TTSConfig",
        (
            Field("Voice", _text(MAX_VOICE_CHARS)),
            Field("SpeechRate", _int(*SPEECH_RATE)),
            Field("Volume", _int(*VOLUME)),
        ),
    ),
}


def read_fields(params: Params, fields: tuple[Field, ...]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in fields:
        if field.present(params):
            raw = params.get(field.name)
            if (
                field.required
                and raw is not None
                and not raw.strip()
                and field.read is not _phrases
            ):
                raise errors.MissingParameter(field.name)
            changes[field.key or field.name] = field.read(params, field.name)
        elif field.required:
            raise errors.MissingParameter(field.name)
    return changes


# -- answers ------------------------------------------------------------------


def navigation_fields(instance: Instance) -> Fields:
    """Every table as DescribeNavigationConfig answers it (seed §10.1, plus FallbackConfig)."""
    cfg = instance.navigation
    doc = instance.document

    def stored(table: str, key: str) -> str:
        # A prompt that is off (asking back disabled ...) is shown as stored, or "".
        value = doc.get(table, {}).get(key, "")
        return value if isinstance(value, str) else ""

    g, u, a, s, c, f = (
        cfg.greeting,
        cfg.unrecognizing,
        cfg.asking_back,
        cfg.silence_timeout,
        cfg.complaining,
        cfg.fallback,
    )
    return {
        "GreetingConfig": {
            "GreetingWords": g.greeting_words.source,
            "SourceType": g.source_type,
            "IntentTrigger": g.intent_trigger,
            "Interruptible": g.interruptible,
        },
        "UnrecognizingConfig": {
            "Prompt": u.prompt.source,
            "Threshold": u.threshold,
            "FinalPrompt": u.final_prompt.source,
            "FinalAction": u.final_action.value,
            "FinalActionParams": u.final_action_params,
        },
        "RepeatingConfig": {"Utterances": list(cfg.repeating.utterances)},
        "AskingBackConfig": {
            "Enabled": a.enabled,
            "Prompt": a.prompt.source if a.enabled else stored("AskingBackConfig", "Prompt"),
            "EnableNegativeFeedback": a.enable_negative_feedback,
            "NegativeFeedbackUtterances": list(a.negative_feedback_utterances),
            "NegativeFeedbackPrompt": a.negative_feedback_prompt.source
            if a.enable_negative_feedback
            else stored("AskingBackConfig", "NegativeFeedbackPrompt"),
            "NegativeFeedbackAction": a.negative_feedback_action.value,
            "NegativeFeedbackActionParams": a.negative_feedback_action_params,
        },
        "SilenceTimeoutConfig": {
            "Prompt": s.prompt.source,
            "Timeout": s.timeout,
            "Threshold": s.threshold,
            "FinalPrompt": s.final_prompt.source,
            "FinalAction": s.final_action.value,
            "FinalActionParams": s.final_action_params,
            "SourceType": s.source_type,
            "IntentTrigger": s.intent_trigger,
        },
        "ComplainingConfig": {
            "Utterances": list(c.utterances),
            "Prompt": c.prompt.source if c.utterances else stored("ComplainingConfig", "Prompt"),
            # The seed's example names these Action and ActionParams, its field
            # table FinalAction and FinalActionParams: both, with one value.
            "Action": c.action.value,
            "ActionParams": c.action_params,
            "FinalAction": c.action.value,
            "FinalActionParams": c.action_params,
        },
        "FallbackConfig": {
            "Prompt": f.prompt.source,
            "FinalAction": f.final_action.value,
            "FinalActionParams": f.final_action_params,
            "TurnBudget": f.turn_budget_ms,
        },
    }


def tts_fields(tts: TTSConfig) -> Fields:
    return {
        "Voice": tts.voice,
        "SpeechRate": tts.speech_rate,
        "Volume": tts.volume,
        "Engine": tts.engine,
    }


# -- actions ------------------------------------------------------------------


def actions(context: Context) -> dict[str, Handler]:
    editor = editor_of(context)
    auditions: Path | None = context.links.roots.get("auditions")
    made: list[TtsService] = []

    def instance_of(params: Params) -> Instance:
        instance = context.instances.get(required(params, "InstanceId", MAX_ID_CHARS))
        if instance is None:
            raise errors.InstanceNotFound()
        return instance

    def describe_navigation_config(params: Params, request: Request) -> Fields:
        return navigation_fields(instance_of(params))

    def describe_tts_config(params: Params, request: Request) -> Fields:
        return tts_fields(instance_of(params).navigation.tts)

    def modifier(table: str, fields: tuple[Field, ...]) -> Handler:
        async def modify(params: Params, request: Request) -> Fields:
            instance_id = required(params, "InstanceId", MAX_ID_CHARS)
            changes = read_fields(params, fields)

            def change(doc: Document) -> None:
                doc[table] = {**doc.get(table, {}), **changes}

            await editor.edit(instance_id, change, request.user, names)
            return {}

        names = {f"{table}.{f.key}": f.name for f in fields if f.key}
        return modify

    def tts_service() -> TtsService:
        # Made on first use: a gateway nobody auditions on never looks for espeak-ng.
        if not made:
            assert auditions is not None
            made.append(
                TtsService(auditions, EspeakSynthesizer(), AUDITION_RATE, AUDITION_MAX_BYTES)
            )
        return made[0]

    async def audit_tts_voice(params: Params, request: Request) -> Fields:
        context.need_store()  # the links to auditions are signed with its key
        instance = instance_of(params)
        text = required(params, "Text", MAX_TEXT_CHARS)
        # The seed marks Voice, SpeechRate and Volume required; left out,
        # the instance's current values are used.
        current = instance.navigation.tts
        changes = read_fields(params, TABLES["ModifyTTSConfig"][1])
        tts = TTSConfig(
            voice=changes.get("Voice") or current.voice,
            speech_rate=changes.get("SpeechRate", current.speech_rate),
            volume=changes.get("Volume", current.volume),
        )
        if auditions is None:
            raise errors.StoreDisabled()
        try:
            prompt = await tts_service().prompt(text, tts)
        except TtsError as exc:
            raise errors.InternalServerError(f"Text to speech failed: {exc}") from None
        return {"AuditionUrl": context.links.url(request.base_url, "auditions", prompt.name)}

    handlers: dict[str, Handler] = {
        "DescribeNavigationConfig": describe_navigation_config,
        "DescribeTTSConfig": describe_tts_config,
        # The seed's own spelling in §9.2, for clients written from it.
        "DescribeTTSTConfig": describe_tts_config,
        "AuditTTSVoice": audit_tts_voice,
    }
    for action, (table, fields) in TABLES.items():
        handlers[action] = modifier(table, fields)
    return handlers

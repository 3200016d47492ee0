"""An instance's navigation config, as frozen dataclasses, with validation.

Field names follow the VoiceNavigator API (DescribeNavigationConfig, seed
§10.1) so an instance file reads like the API's own JSON. Validation is pure:
`parse_navigation` takes a mapping (a TOML table or, later, API parameters)
and raises `ConfigProblem` naming the key path and what is wrong; callers
add the file name or translate it to an API error.

Extensions to the seed's shapes, all optional:
- `GreetingConfig.Interruptible` (default false, as in the seed's examples);
- `SourceType = "fixed"` plays GreetingWords; `"chatbotIntent"` asks the bot
  with IntentTrigger and falls back to GreetingWords when it has no answer.
- `FallbackConfig` (Prompt, FinalAction, FinalActionParams, TurnBudget in
  ms): the reply when a backend fails or misses the turn budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from gateway.dialogue.matching import PhraseSet
from gateway.dialogue.operations import ACTIONS, Action
from gateway.dialogue.template import Template, compile_template

SourceType = Literal["fixed", "chatbotIntent"]

MAX_THRESHOLD = 100
MAX_TIMEOUT_SECONDS = 600
MAX_PROMPT_CHARS = 2000
DEFAULT_TURN_BUDGET_MS = 1500
MAX_TURN_BUDGET_MS = 30_000
DEFAULT_FALLBACK_PROMPT = (
    "抱歉，系统繁忙，即将为您转接人工。Sorry, our system is busy. Transferring you to an agent."
)


class ConfigProblem(Exception):
    """What is wrong and where, inside one config mapping."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True, slots=True)
class GreetingConfig:
    greeting_words: Template
    intent_trigger: str = ""
    source_type: SourceType = "fixed"
    interruptible: bool = False


@dataclass(frozen=True, slots=True)
class UnrecognizingConfig:
    prompt: Template
    threshold: int
    final_prompt: Template
    final_action: Action
    final_action_params: str = "{}"


@dataclass(frozen=True, slots=True)
class RepeatingConfig:
    utterances: tuple[str, ...]
    phrases: PhraseSet


@dataclass(frozen=True, slots=True)
class AskingBackConfig:
    enabled: bool
    prompt: Template
    enable_negative_feedback: bool
    negative_feedback_utterances: tuple[str, ...]
    negative_feedback_phrases: PhraseSet
    negative_feedback_prompt: Template
    negative_feedback_action: Action
    negative_feedback_action_params: str = "{}"


@dataclass(frozen=True, slots=True)
class SilenceTimeoutConfig:
    prompt: Template
    timeout: int
    threshold: int
    final_prompt: Template
    final_action: Action
    final_action_params: str = "{}"
    intent_trigger: str = ""
    source_type: SourceType = "fixed"


@dataclass(frozen=True, slots=True)
class ComplainingConfig:
    utterances: tuple[str, ...]
    phrases: PhraseSet
    prompt: Template
    action: Action
    action_params: str = "{}"


@dataclass(frozen=True, slots=True)
class TTSConfig:
    voice: str = "xiaoyun"
    volume: int = 50
    speech_rate: int = 0
    # The switch's TTS engine (an extension: FreeSWITCH's `speak` engine, for
    # example "unimrcp"). Empty: the adapter's default engine and voice.
    engine: str = ""


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """What the caller hears when the bot or remote navigator fails or is late.

    An extension to the seed: `TurnBudget` (milliseconds) bounds a turn that
    waits on a backend; past it, or on any backend failure, the reply is
    `Prompt` followed by `FinalAction`.
    """

    prompt: Template
    final_action: Action
    final_action_params: str = "{}"
    turn_budget_ms: int = DEFAULT_TURN_BUDGET_MS


@dataclass(frozen=True, slots=True)
class NavigationConfig:
    greeting: GreetingConfig
    unrecognizing: UnrecognizingConfig
    repeating: RepeatingConfig
    asking_back: AskingBackConfig
    silence_timeout: SilenceTimeoutConfig
    complaining: ComplainingConfig
    tts: TTSConfig
    fallback: FallbackConfig


# -- validation -----------------------------------------------------------


class Reader:
    """Typed access to one table, naming `prefix.Key` in every problem."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def table(self, name: str, required: bool = True) -> Reader:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigProblem(self.key(name), "missing table")
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigProblem(self.key(name), "must be a table")
        return Reader(value, self.key(name))

    def text(
        self, name: str, default: str | None = None, *, max_len: int = MAX_PROMPT_CHARS
    ) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise ConfigProblem(self.key(name), "missing")
        if not isinstance(value, str):
            raise ConfigProblem(self.key(name), f"must be a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise ConfigProblem(self.key(name), f"longer than {max_len} characters")
        return value

    def prompt(self, name: str, default: str | None = None) -> Template:
        value = self.text(name, default)
        if not value.strip():
            raise ConfigProblem(self.key(name), "must not be empty")
        return compile_template(value)

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        value = self.data.get(name, default)
        if value is None:
            raise ConfigProblem(self.key(name), "missing")
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigProblem(self.key(name), f"must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise ConfigProblem(self.key(name), f"must be between {low} and {high}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigProblem(self.key(name), f"must be true or false, got {value!r}")
        return value

    def action(self, name: str, default: str | None = None) -> Action:
        value = self.text(name, default)
        try:
            return ACTIONS[value]
        except KeyError:
            choices = ", ".join(ACTIONS)
            raise ConfigProblem(
                self.key(name), f"must be one of {choices}, got {value!r}"
            ) from None

    def action_params(self, name: str) -> str:
        return parse_action_params(self.data.get(name), self.key(name))

    def phrases(self, name: str, required: bool = False) -> tuple[str, ...]:
        value = self.data.get(name, [] if not required else None)
        if value is None:
            raise ConfigProblem(self.key(name), "missing")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigProblem(self.key(name), "must be a list of strings")
        if any(not v.strip() for v in value):
            raise ConfigProblem(self.key(name), "must not contain empty strings")
        return tuple(value)

    def source_type(self, name: str) -> SourceType:
        value = self.text(name, "fixed")
        if value not in ("fixed", "chatbotIntent"):
            raise ConfigProblem(self.key(name), f"must be fixed or chatbotIntent, got {value!r}")
        return cast(SourceType, value)


def parse_action_params(value: object, key: str) -> str:
    """ActionParams as the API returns it: a stringified JSON object."""
    if value is None or value == "":
        return "{}"
    if isinstance(value, Mapping):
        return orjson.dumps(dict(value)).decode()
    if not isinstance(value, str):
        raise ConfigProblem(key, "must be a JSON object string or a table")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ConfigProblem(key, "is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ConfigProblem(key, "must be a JSON object")
    return value


def parse_navigation(data: Mapping[str, Any], prefix: str = "") -> NavigationConfig:
    root = Reader(data, prefix)

    g = root.table("GreetingConfig")
    greeting = GreetingConfig(
        greeting_words=g.prompt("GreetingWords"),
        intent_trigger=g.text("IntentTrigger", "", max_len=200),
        source_type=g.source_type("SourceType"),
        interruptible=g.boolean("Interruptible", False),
    )
    if greeting.source_type == "chatbotIntent" and not greeting.intent_trigger:
        raise ConfigProblem(g.key("IntentTrigger"), "required when SourceType is chatbotIntent")

    u = root.table("UnrecognizingConfig")
    unrecognizing = UnrecognizingConfig(
        prompt=u.prompt("Prompt"),
        threshold=u.integer("Threshold", 1, MAX_THRESHOLD),
        final_prompt=u.prompt("FinalPrompt"),
        final_action=u.action("FinalAction"),
        final_action_params=u.action_params("FinalActionParams"),
    )

    r = root.table("RepeatingConfig", required=False)
    repeating_utterances = r.phrases("Utterances")
    repeating = RepeatingConfig(repeating_utterances, PhraseSet(repeating_utterances))

    a = root.table("AskingBackConfig", required=False)
    enabled = a.boolean("Enabled", False)
    negative = a.boolean("EnableNegativeFeedback", False)
    negative_utterances = a.phrases("NegativeFeedbackUtterances")
    if negative and not negative_utterances:
        raise ConfigProblem(
            a.key("NegativeFeedbackUtterances"), "required when EnableNegativeFeedback is true"
        )
    asking_back = AskingBackConfig(
        enabled=enabled,
        prompt=a.prompt("Prompt", None if enabled else "-"),
        enable_negative_feedback=negative,
        negative_feedback_utterances=negative_utterances,
        negative_feedback_phrases=PhraseSet(negative_utterances),
        negative_feedback_prompt=a.prompt("NegativeFeedbackPrompt", None if negative else "-"),
        negative_feedback_action=a.action(
            "NegativeFeedbackAction", None if negative else Action.HANG_UP.value
        ),
        negative_feedback_action_params=a.action_params("NegativeFeedbackActionParams"),
    )

    s = root.table("SilenceTimeoutConfig")
    silence = SilenceTimeoutConfig(
        prompt=s.prompt("Prompt"),
        timeout=s.integer("Timeout", 1, MAX_TIMEOUT_SECONDS),
        threshold=s.integer("Threshold", 1, MAX_THRESHOLD),
        final_prompt=s.prompt("FinalPrompt"),
        final_action=s.action("FinalAction"),
        final_action_params=s.action_params("FinalActionParams"),
        intent_trigger=s.text("IntentTrigger", "", max_len=200),
        source_type=s.source_type("SourceType"),
    )

    c = root.table("ComplainingConfig", required=False)
    complaining_utterances = c.phrases("Utterances")
    has_complaints = bool(complaining_utterances)
    complaining = ComplainingConfig(
        utterances=complaining_utterances,
        phrases=PhraseSet(complaining_utterances),
        prompt=c.prompt("Prompt", None if has_complaints else "-"),
        action=c.action("Action", None if has_complaints else Action.TRANSFER_TO_AGENT.value),
        action_params=c.action_params("ActionParams"),
    )

    t = root.table("TTSConfig", required=False)
    tts = TTSConfig(
        voice=t.text("Voice", "xiaoyun", max_len=64),
        volume=t.integer("Volume", 0, 100, 50),
        speech_rate=t.integer("SpeechRate", -500, 500, 0),
        engine=t.text("Engine", "", max_len=64),
    )

    f = root.table("FallbackConfig", required=False)
    fallback = FallbackConfig(
        prompt=f.prompt("Prompt", DEFAULT_FALLBACK_PROMPT),
        final_action=f.action("FinalAction", Action.TRANSFER_TO_AGENT.value),
        final_action_params=f.action_params("FinalActionParams"),
        turn_budget_ms=f.integer("TurnBudget", 10, MAX_TURN_BUDGET_MS, DEFAULT_TURN_BUDGET_MS),
    )

    return NavigationConfig(
        greeting, unrecognizing, repeating, asking_back, silence, complaining, tts, fallback
    )

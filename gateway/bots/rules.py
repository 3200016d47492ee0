"""The embedded rules bot: an instance's knowledge as data in its TOML.

Intents lead from what the caller says to an answer or an action; DTMF menus
lead from a digit string to an answer, an action or a sub-menu. Everything
is compiled at start-up (normalised examples, keyword sets, regular
expressions, answer templates); answering is a few dict lookups and, only
when no example matches exactly, one pass over keywords and patterns.

Matching, in this order:
1. an intent example equal to the utterance (after normalisation);
2. the first intent, in file order, with a keyword occurring in the
   utterance or a pattern matching it. Named groups of a pattern become
   conversation variables, so `(?P<account>\\d{6})` captures an account.
An `intent` query (a greeting trigger) names the intent directly.

The bot's state is the name of the DTMF menu the caller is in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.dialogue.bot import BotAnswer, BotQuery
from gateway.dialogue.config import ConfigProblem, Reader, parse_action_params
from gateway.dialogue.matching import PhraseSet, normalize
from gateway.dialogue.operations import EMPTY_VARS, Action
from gateway.dialogue.template import Template, compile_template

MAX_DIGITS = 32
_DIGITS = re.compile(r"[0-9*#]{1,32}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """An answer with its action; templates are rendered per conversation."""

    text: Template
    action: Action
    action_params: str
    interruptible: bool
    sets: Mapping[str, str]
    menu: str | None = None  # a sub-menu to enter
    expects_input: bool = False

    def render(self, variables: Mapping[str, str], extra: Mapping[str, str]) -> BotAnswer:
        merged = {**variables, **extra} if extra else variables
        new_vars = {**self.sets, **extra} if extra else self.sets
        return BotAnswer(
            self.text.render(merged),
            self.action,
            self.action_params,
            self.interruptible,
            new_vars,
            self.menu,
            self.expects_input,
        )


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    keywords: PhraseSet
    patterns: tuple[re.Pattern[str], ...]
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    prompt: Template
    options: Mapping[str, Outcome]


class RulesBot:
    """Answers utterances from intents and digits from DTMF menus."""

    def __init__(
        self,
        intents: tuple[Intent, ...],
        menus: Mapping[str, Menu],
        root_menu: str,
    ) -> None:
        self.intents = intents
        self.menus = menus
        self.root_menu = root_menu
        self._by_name = {i.name: i for i in intents}
        self._examples: dict[str, Intent] = {}
        self._loose = tuple(i for i in intents if i.keywords or i.patterns)

    def add_example(self, example: str, intent: Intent) -> None:
        # The first intent to claim an example keeps it.
        self._examples.setdefault(normalize(example), intent)

    def answer(self, query: BotQuery) -> BotAnswer | None:
        if query.kind == "digits":
            return self._digits(query)
        if query.kind == "intent":
            intent = self._by_name.get(query.text)
            if intent is not None:
                return intent.outcome.render(query.variables, EMPTY_VARS)
        return self._utterance(query)

    def _utterance(self, query: BotQuery) -> BotAnswer | None:
        text = query.normalized
        intent = self._examples.get(text)
        if intent is not None:
            return intent.outcome.render(query.variables, EMPTY_VARS)
        for intent in self._loose:
            for pattern in intent.patterns:
                m = pattern.search(text)
                if m is not None:
                    captured = {k: v for k, v in m.groupdict().items() if v is not None}
                    return intent.outcome.render(query.variables, captured)
            if intent.keywords and intent.keywords.matches(text):
                return intent.outcome.render(query.variables, EMPTY_VARS)
        return None

    def _digits(self, query: BotQuery) -> BotAnswer | None:
        menu = self.menus.get(query.bot_state or self.root_menu)
        if menu is None:
            return None
        outcome = menu.options.get(query.text)
        if outcome is None:
            return None
        return outcome.render(query.variables, EMPTY_VARS)

    def __repr__(self) -> str:
        return f"RulesBot(intents={len(self.intents)}, menus={list(self.menus)})"


# -- building from config ---------------------------------------------------


def _outcome(r: Reader, menus: Mapping[str, Any] | None = None) -> Outcome:
    action = r.action("action", Action.BROADCAST.value)
    menu = r.data.get("menu")
    if menu is not None and (not isinstance(menu, str) or menus is None or menu not in menus):
        raise ConfigProblem(r.key("menu"), f"names no menu in bot.menus: {menu!r}")
    default_text: str | None = None
    if menu is not None and menus is not None:
        default_text = Reader(menus[menu], "").text("prompt", "")
    elif action is not Action.BROADCAST:
        default_text = ""
    text = r.text("answer", default_text)
    if not text.strip() and action is Action.BROADCAST and menu is None:
        raise ConfigProblem(r.key("answer"), "must not be empty")
    sets = r.data.get("set", {})
    if not isinstance(sets, Mapping) or not all(isinstance(v, str) for v in sets.values()):
        raise ConfigProblem(r.key("set"), "must be a table of strings")
    return Outcome(
        text=compile_template(text),
        action=action,
        action_params=parse_action_params(r.data.get("action_params"), r.key("action_params")),
        interruptible=r.boolean("interruptible", action is Action.BROADCAST),
        sets=dict(sets) if sets else EMPTY_VARS,
        menu=menu,
        # Entering a menu plays its prompt, which asks for digits.
        expects_input=r.boolean("expects_input", menu is not None),
    )


def build_rules_bot(data: Mapping[str, Any], prefix: str = "bot") -> RulesBot:
    """Compile a `[bot]` table (kind = "rules") into a `RulesBot`."""
    root = Reader(data, prefix)
    raw_menus = data.get("menus", {})
    if not isinstance(raw_menus, Mapping):
        raise ConfigProblem(root.key("menus"), "must be a table of menus")

    menus: dict[str, Menu] = {}
    for name in raw_menus:
        m = root.table("menus").table(name)
        options_table = m.table("options", required=False)
        options: dict[str, Outcome] = {}
        for digits, option in options_table.data.items():
            if not _DIGITS.fullmatch(digits):
                raise ConfigProblem(options_table.key(digits), "must be 1-32 of 0-9, * and #")
            if not isinstance(option, Mapping):
                raise ConfigProblem(options_table.key(digits), "must be a table")
            options[digits] = _outcome(options_table.table(digits), raw_menus)
        menus[name] = Menu(name, compile_template(m.text("prompt", "")), options)

    root_menu = root.text("root_menu", "main", max_len=64)
    if menus and root_menu not in menus:
        raise ConfigProblem(root.key("root_menu"), f"names no menu in bot.menus: {root_menu!r}")

    raw_intents = data.get("intents", [])
    if not isinstance(raw_intents, list):
        raise ConfigProblem(root.key("intents"), "must be an array of tables")
    intents: list[Intent] = []
    examples: list[tuple[str, int]] = []
    seen: set[str] = set()
    for n, raw in enumerate(raw_intents):
        key = f"{root.key('intents')}[{n}]"
        if not isinstance(raw, Mapping):
            raise ConfigProblem(key, "must be a table")
        r = Reader(raw, key)
        name = r.text("name", max_len=64)
        if name in seen:
            raise ConfigProblem(r.key("name"), f"duplicate intent name {name!r}")
        seen.add(name)
        patterns = []
        for i, source in enumerate(r.phrases("patterns")):
            try:
                patterns.append(re.compile(source))
            except re.error as exc:
                raise ConfigProblem(
                    f"{r.key('patterns')}[{i}]", f"bad regular expression: {exc}"
                ) from None
        intent_examples = r.phrases("examples")
        keywords = r.phrases("keywords")
        if not (intent_examples or keywords or patterns):
            raise ConfigProblem(key, "needs examples, keywords or patterns")
        intent = Intent(name, PhraseSet(keywords), tuple(patterns), _outcome(r, raw_menus))
        intents.append(intent)
        examples.extend((e, len(intents) - 1) for e in intent_examples)

    bot = RulesBot(tuple(intents), menus, root_menu)
    for example, index in examples:
        bot.add_example(example, intents[index])
    return bot

from __future__ import annotations

import pytest

from gateway.bots.rules import build_rules_bot
from gateway.dialogue.bot import BotQuery
from gateway.dialogue.config import ConfigProblem
from gateway.dialogue.matching import normalize
from gateway.dialogue.operations import Action

BOT_TABLE = {
    "kind": "rules",
    "root_menu": "main",
    "intents": [
        {"name": "exact", "examples": ["查余额"], "answer": "exact ${v}"},
        {"name": "kw", "keywords": ["余额", "balance"], "answer": "keyword"},
        {"name": "re", "patterns": [r"order (?P<order>\d+)"], "answer": "order ${order}"},
        {
            "name": "agent",
            "keywords": ["human"],
            "answer": "transferring",
            "action": "TransferToAgent",
            "action_params": {"skillGroupId": "g1"},
        },
    ],
    "menus": {
        "main": {"prompt": "main menu", "options": {"1": {"answer": "one"}, "2": {"menu": "sub"}}},
        "sub": {"prompt": "sub menu", "options": {"#": {"menu": "main"}}},
    },
}


def ask(
    text: str, kind: str = "utterance", state: str = "", variables: dict[str, str] | None = None
):  # type: ignore[no-untyped-def]
    bot = build_rules_bot(BOT_TABLE)
    return bot.answer(BotQuery(kind, text, normalize(text), variables or {}, state, 1))  # type: ignore[arg-type]


def test_exact_example_beats_keywords_and_renders_variables() -> None:
    a = ask("查余额！", variables={"v": "9"})
    assert a is not None and a.text == "exact 9"


def test_keyword_pattern_and_action_intents() -> None:
    assert ask("what is my BALANCE").text == "keyword"  # type: ignore[union-attr]
    a = ask("Order 42 status")
    assert a is not None and a.text == "order 42" and a.variables == {"order": "42"}
    t = ask("a human please")
    assert t is not None and t.action is Action.TRANSFER_TO_AGENT
    assert t.action_params == '{"skillGroupId":"g1"}'
    assert not t.interruptible
    assert ask("nothing known") is None


def test_menus_enter_submenus_and_return() -> None:
    assert ask("1", "digits").text == "one"  # type: ignore[union-attr]
    sub = ask("2", "digits")
    assert sub is not None and sub.text == "sub menu" and sub.bot_state == "sub"
    assert sub.expects_input
    assert ask("1", "digits", state="sub") is None
    back = ask("#", "digits", state="sub")
    assert back is not None and back.bot_state == "main" and back.text == "main menu"


def test_intent_query_names_the_intent() -> None:
    assert ask("kw", "intent").text == "keyword"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"root_menu": "nope"}, "bot.root_menu"),
        ({"intents": [{"name": "x", "answer": "y"}]}, "needs examples, keywords or patterns"),
        ({"intents": [{"name": "x", "patterns": ["("], "answer": "y"}]}, "bad regular expression"),
        (
            {"intents": [{"name": "x", "keywords": ["a"], "answer": "y", "menu": "ghost"}]},
            "names no menu",
        ),
        ({"menus": {"main": {"options": {"12x": {"answer": "a"}}}}}, r"0-9, \* and #"),
        (
            {"intents": [{"name": "x", "keywords": ["a"], "answer": "y", "action": "Dance"}]},
            "must be one of",
        ),
    ],
)
def test_invalid_bot_config_is_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigProblem, match=message):
        build_rules_bot({**BOT_TABLE, **change})

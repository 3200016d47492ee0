"""The navigator, by plain function calls: no event loop, no I/O."""

from __future__ import annotations

import tomllib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bots.rules import RulesBot, build_rules_bot
from gateway.dialogue import navigator
from gateway.dialogue.bot import BotAnswer
from gateway.dialogue.config import NavigationConfig, parse_navigation
from gateway.dialogue.navigator import AskBot, DialogueState, Done
from gateway.dialogue.operations import (
    Action,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    SilenceTimeout,
)
from tests.conftest import DEMO

DATA: dict[str, Any] = tomllib.loads(DEMO.read_text(encoding="utf-8"))
CFG: NavigationConfig = parse_navigation(DATA)
BOT: RulesBot = build_rules_bot(DATA["bot"])


def run(step: navigator.Step, bot: RulesBot = BOT, cfg: NavigationConfig = CFG) -> Done:
    if isinstance(step, AskBot):
        return navigator.resume(cfg, step, bot.answer(step.query))
    return step


def begin(variables: dict[str, str] | None = None) -> Done:
    return run(navigator.begin(CFG, BeginDialogue("13800000000", "95555", variables or {})))


def say(state: DialogueState, text: str) -> Done:
    return run(navigator.handle(CFG, state, Dialogue(text)))


def press(state: DialogueState, digits: str) -> Done:
    return run(navigator.handle(CFG, state, CollectedNumber(digits)))


def test_begin_plays_greeting_and_keeps_initial_context() -> None:
    done = begin({"balance": "88"})
    assert done.outcome == "greeting"
    assert done.reply.action is Action.BROADCAST
    assert done.reply.text.startswith("您好，欢迎致电演示银行")
    assert done.reply.wait_seconds == 10
    assert done.state.variables == {"balance": "88"}


def test_answer_fills_variables_and_appends_asking_back() -> None:
    done = say(begin({"balance": "88", "name": "王"}).state, "我想查询一下余额")
    assert done.outcome == "answer"
    assert done.reply.text == (
        "王您好，您的账户余额为88元。Your balance is 88 yuan. "
        "请问还有什么可以帮您？Is there anything else I can help with?"
    )
    assert done.state.asking_back


def test_repeat_replays_last_prompt_exactly_without_the_bot() -> None:
    first = say(begin({"balance": "1"}).state, "check my balance")
    # A bot that would fail if asked: repeating must not reach it.
    step = navigator.handle(CFG, first.state, Dialogue("没听清，再说一遍"))
    assert isinstance(step, Done)
    assert step.outcome == "repeat"
    assert step.reply == first.reply


def test_complaint_transfers_with_its_action_params() -> None:
    done = say(begin().state, "我要投诉！")
    assert done.outcome == "complaint"
    assert done.reply.action is Action.TRANSFER_TO_AGENT
    assert done.reply.action_params == '{"skillGroupId": "complaints"}'
    assert done.reply.wait_seconds == 0


def test_negative_feedback_only_while_asking_back_is_pending() -> None:
    state = begin().state
    # No question pending: "没有了" is just an unrecognised utterance.
    assert say(state, "没有了").outcome == "unrecognized"
    answered = say(state, "营业时间是几点")
    done = say(answered.state, "没有了，谢谢")
    assert done.outcome == "negative_feedback"
    assert done.reply.action is Action.TRANSFER_TO_IVR
    assert done.reply.action_params == '{"route": "satisfaction"}'


def test_asking_back_survives_a_silence() -> None:
    answered = say(begin().state, "几点营业")
    quiet = navigator.silence(CFG, answered.state, SilenceTimeout())
    assert quiet.state.asking_back
    assert say(quiet.state, "no thanks").outcome == "negative_feedback"


def test_unrecognized_counts_to_final_action_and_answer_resets() -> None:
    state = begin().state
    one = say(state, "blah")
    two = say(one.state, "blah blah")
    assert (one.state.unrecognized, two.state.unrecognized) == (1, 2)
    assert two.reply.action is Action.BROADCAST
    reset = say(two.state, "余额")
    assert reset.state.unrecognized == 0
    s = reset.state
    for _ in range(2):
        s = say(s, "???? zzz").state
    final = say(s, "qwerty")
    assert final.outcome == "unrecognized_final"
    assert final.reply.action is Action.TRANSFER_TO_AGENT
    assert final.reply.action_params == '{"skillGroupId": "fallbackSkillGroup"}'
    assert final.state.unrecognized == 0


def test_silence_counts_to_final_and_input_resets() -> None:
    state = begin().state
    s1 = navigator.silence(CFG, state, SilenceTimeout())
    s2 = navigator.silence(CFG, s1.state, SilenceTimeout())
    assert s2.state.silences == 2 and s2.outcome == "silence"
    assert say(s2.state, "余额").state.silences == 0
    s3 = navigator.silence(CFG, s2.state, SilenceTimeout())
    assert s3.outcome == "silence_final"
    assert s3.reply.action is Action.HANG_UP


def test_dtmf_menus_and_unknown_digits() -> None:
    state = begin({"balance": "5"}).state
    cards = press(state, "2")
    assert cards.reply.text.startswith("银行卡业务")
    # A menu prompt asks for digits itself: no asking-back question on it.
    assert "anything else" not in cards.reply.text
    assert cards.state.bot_state == "cards"
    lost = press(cards.state, "1")
    assert lost.reply.action is Action.TRANSFER_TO_IVR
    assert lost.reply.action_params == '{"ivr":"lost-card"}'
    back = press(cards.state, "9")
    assert back.state.bot_state == "main"
    assert press(back.state, "1").reply.text.startswith("您的账户余额为5元")
    assert press(state, "7").outcome == "unrecognized"
    assert press(state, "").outcome == "unrecognized"


def test_pattern_groups_become_variables() -> None:
    done = say(begin().state, "我的账号 123456789")
    assert done.state.variables["account"] == "123456789"
    assert "123456789" in done.reply.text


def test_greeting_from_bot_intent_falls_back_to_greeting_words() -> None:
    data = dict(DATA)
    data["GreetingConfig"] = {
        "SourceType": "chatbotIntent",
        "IntentTrigger": "hours",
        "GreetingWords": "fallback greeting",
    }
    cfg = parse_navigation(data)
    step = navigator.begin(cfg, BeginDialogue("1"))
    assert isinstance(step, AskBot)
    assert navigator.resume(cfg, step, BOT.answer(step.query)).reply.text.startswith(
        "我们的营业时间"
    )
    assert navigator.resume(cfg, step, None).reply.text == "fallback greeting"


def test_bot_variable_updates_and_non_broadcast_answers() -> None:
    state = begin().state
    step = navigator.handle(CFG, state, Dialogue("anything"))
    assert isinstance(step, AskBot)
    done = navigator.resume(
        CFG, step, BotAnswer("bye", Action.HANG_UP, "{}", False, {"k": "v"}, "menu-x")
    )
    assert done.reply.text == "bye"  # no asking back before a hang-up
    assert done.state.variables == {"k": "v"}
    assert done.state.bot_state == "menu-x"


# -- properties over random operation sequences ------------------------------

UTTERANCES = st.sampled_from(
    ["再说一遍", "投诉", "没有了", "查询余额", "几点", "blah", "", "！！", "账号 1234567", "bye"]
)
OPS = st.one_of(
    UTTERANCES.map(Dialogue),
    st.text(alphabet="0123456789*#", max_size=3).map(CollectedNumber),
    st.just(SilenceTimeout()),
    st.text(max_size=12).map(Dialogue),
)


def apply(state: DialogueState, op: Dialogue | CollectedNumber | SilenceTimeout) -> Done:
    if isinstance(op, SilenceTimeout):
        return navigator.silence(CFG, state, op)
    return run(navigator.handle(CFG, state, op))


@settings(max_examples=200, deadline=None)
@given(st.lists(OPS, max_size=30))
def test_counts_never_pass_their_thresholds(ops: list[Any]) -> None:
    state = begin().state
    for op in ops:
        state = apply(state, op).state
        assert 0 <= state.unrecognized < CFG.unrecognizing.threshold
        assert 0 <= state.silences < CFG.silence_timeout.threshold


@settings(max_examples=100, deadline=None)
@given(st.lists(OPS, max_size=20))
def test_threshold_silences_always_reach_the_final_action(ops: list[Any]) -> None:
    state = begin().state
    for op in ops:
        state = apply(state, op).state
    outcomes = []
    for _ in range(CFG.silence_timeout.threshold):
        done = navigator.silence(CFG, state, SilenceTimeout())
        outcomes.append(done.outcome)
        state = done.state
    assert "silence_final" in outcomes


@settings(max_examples=100, deadline=None)
@given(
    st.lists(OPS, max_size=20),
    st.lists(st.sampled_from(["zzz", "qq rr", "？", "9 9"]), min_size=3, max_size=3),
)
def test_threshold_non_matches_always_reach_the_final_action(
    ops: list[Any], misses: list[str]
) -> None:
    state = begin().state
    for op in ops:
        state = apply(state, op).state
    outcomes = []
    for text in misses[: CFG.unrecognizing.threshold]:
        done = say(state, text)
        outcomes.append(done.outcome)
        state = done.state
    assert "unrecognized_final" in outcomes


def test_every_operation_advances_the_turn_and_input_resets_silence() -> None:
    state = begin().state
    assert state.turn == 1
    quiet = navigator.silence(CFG, state, SilenceTimeout()).state
    assert (quiet.turn, quiet.silences) == (2, 1)
    steps = [
        ("answer", lambda s: say(s, "查询余额")),
        ("unrecognized", lambda s: say(s, "zzz")),
        ("repeat", lambda s: say(s, "再说一遍")),
        ("answer", lambda s: press(s, "2")),
        ("unrecognized", lambda s: press(s, "")),
        ("complaint", lambda s: say(s, "投诉")),
    ]
    s = quiet
    for expected, step in steps:
        silent = navigator.silence(CFG, s, SilenceTimeout()).state
        done = step(silent)
        assert done.outcome == expected
        assert done.state.turn == silent.turn + 1
        assert done.state.silences == 0
        s = done.state

"""The VoiceNavigator policy: a request and a session state in, a reply and a new state out.

Rules of this file:
- No I/O, no clock, no randomness. Every function takes the instance's
  `NavigationConfig`, the conversation's `DialogueState` and one operation.
- A step is either `Done` (the reply and the next state) or `AskBot` (the
  question for the bot and the state to resume from). The caller answers an
  `AskBot` by calling `resume` with the bot's `BotAnswer` or `None`.
- Order for an utterance: repeating, complaining, negative feedback (only
  while an asking-back question is pending), then the bot.
- Counts: the unrecognized and silence counts go up by one per miss. Below
  Threshold the reply is Prompt; reaching Threshold gives FinalPrompt with
  FinalAction and puts the count back to zero, so a count never passes its
  threshold. A recognised input resets the unrecognized count; any caller
  input (utterance or digits) resets the silence count.
- Fallback: when the bot fails or misses the turn budget, `fallback` ends
  the step with FallbackConfig's prompt and final action (a greeting falls
  back to GreetingWords, as it does when the bot has no answer).
- Asking back: when the instance enables it and the bot answers with a
  Broadcast, the asking-back prompt is appended to the answer in the same
  reply, and the question stays pending until the caller's next input. One
  reply per turn keeps every front door simple (the switch plays one prompt,
  then listens), and the caller hears the question while the line is theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

from gateway.dialogue.bot import BotAnswer, BotQuery
from gateway.dialogue.config import NavigationConfig, SilenceTimeoutConfig, UnrecognizingConfig
from gateway.dialogue.matching import normalize
from gateway.dialogue.operations import (
    EMPTY_VARS,
    Action,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    Reply,
    SilenceTimeout,
)
from gateway.dialogue.template import Template

Outcome = Literal[
    "greeting",
    "answer",
    "repeat",
    "complaint",
    "negative_feedback",
    "unrecognized",
    "unrecognized_final",
    "silence",
    "silence_final",
    "fallback",
]
Purpose = Literal["greeting", "answer"]


class DialogueState(NamedTuple):
    variables: Mapping[str, str] = EMPTY_VARS
    last_reply: Reply | None = None
    unrecognized: int = 0
    silences: int = 0
    asking_back: bool = False
    bot_state: str = ""
    turn: int = 0

    def evolve(
        self,
        *,
        variables: Mapping[str, str] | None = None,
        last_reply: Reply | None = None,
        unrecognized: int | None = None,
        silences: int | None = None,
        asking_back: bool | None = None,
        bot_state: str | None = None,
        turn: int | None = None,
    ) -> DialogueState:
        """A copy with the given fields changed (None keeps a field).

        Written out by hand: `dataclasses.replace` costs several times more,
        and this runs a few times per turn.
        """
        return DialogueState(
            self.variables if variables is None else variables,
            self.last_reply if last_reply is None else last_reply,
            self.unrecognized if unrecognized is None else unrecognized,
            self.silences if silences is None else silences,
            self.asking_back if asking_back is None else asking_back,
            self.bot_state if bot_state is None else bot_state,
            self.turn if turn is None else turn,
        )


class Done(NamedTuple):
    reply: Reply
    state: DialogueState
    outcome: Outcome


class AskBot(NamedTuple):
    """A question for the bot. `state` is the conversation before this turn's
    input: `resume` applies the input (next turn, silence count reset) when
    it builds the one new state, so the common path builds no state twice."""

    query: BotQuery
    state: DialogueState
    purpose: Purpose


Step = Done | AskBot


def _merge(variables: Mapping[str, str], extra: Mapping[str, str]) -> Mapping[str, str]:
    if not extra:
        return variables
    if not variables:
        return extra
    return {**variables, **extra}


def _reply(
    cfg: NavigationConfig,
    state: DialogueState,
    text: Template | str,
    action: Action,
    params: str,
    interruptible: bool,
) -> Reply:
    rendered = text if isinstance(text, str) else text.render(state.variables)
    wait = cfg.silence_timeout.timeout if action is Action.BROADCAST else 0
    return Reply(rendered, action, interruptible, params, wait)


def _done(
    state: DialogueState,
    reply: Reply,
    outcome: Outcome,
    *,
    unrecognized: int | None = None,
    silences: int | None = None,
    asking_back: bool | None = None,
    turn: int | None = None,
) -> Done:
    # Built positionally: this runs on every turn (see DialogueState.evolve).
    new_state = DialogueState(
        state.variables,
        reply,
        state.unrecognized if unrecognized is None else unrecognized,
        state.silences if silences is None else silences,
        state.asking_back if asking_back is None else asking_back,
        state.bot_state,
        state.turn if turn is None else turn,
    )
    return Done(reply, new_state, outcome)


def _input_state(state: DialogueState) -> DialogueState:
    """The conversation once the caller's input arrives: the next turn, and
    the silence count reset (any input ends a silence)."""
    return DialogueState(
        state.variables,
        state.last_reply,
        state.unrecognized,
        0,
        state.asking_back,
        state.bot_state,
        state.turn + 1,
    )


def begin(cfg: NavigationConfig, request: BeginDialogue) -> Step:
    """BeginDialogue: the greeting, or a question for the bot's greeting intent."""
    state = DialogueState(variables=request.variables, turn=1)
    greeting = cfg.greeting
    if greeting.source_type == "chatbotIntent":
        trigger = greeting.intent_trigger
        query = BotQuery("intent", trigger, normalize(trigger), state.variables, "", 1)
        return AskBot(query, state, "greeting")
    reply = _reply(
        cfg, state, greeting.greeting_words, Action.BROADCAST, "{}", greeting.interruptible
    )
    return _done(state, reply, "greeting")


def handle(cfg: NavigationConfig, state: DialogueState, op: Dialogue | CollectedNumber) -> Step:
    """An utterance or collected digits."""
    turn = state.turn + 1
    if isinstance(op, CollectedNumber):
        if not op.number:
            return _unrecognized(cfg, _input_state(state))
        query = BotQuery("digits", op.number, op.number, state.variables, state.bot_state, turn)
        return AskBot(query, state, "answer")

    if op.variables:
        state = state.evolve(variables=_merge(state.variables, op.variables))
    text = normalize(op.utterance)
    if not text:
        return _unrecognized(cfg, _input_state(state))

    if cfg.repeating.phrases.search(text) is not None and state.last_reply is not None:
        return Done(state.last_reply, _input_state(state), "repeat")

    c = cfg.complaining
    if c.phrases.search(text) is not None:
        state = _input_state(state)
        reply = _reply(cfg, state, c.prompt, c.action, c.action_params, False)
        return _done(state, reply, "complaint", unrecognized=0, asking_back=False)

    a = cfg.asking_back
    if (
        state.asking_back
        and a.enable_negative_feedback
        and a.negative_feedback_phrases.search(text) is not None
    ):
        state = _input_state(state)
        reply = _reply(
            cfg,
            state,
            a.negative_feedback_prompt,
            a.negative_feedback_action,
            a.negative_feedback_action_params,
            False,
        )
        return _done(state, reply, "negative_feedback", unrecognized=0, asking_back=False)

    query = BotQuery("utterance", op.utterance, text, state.variables, state.bot_state, turn)
    return AskBot(query, state, "answer")


def resume(cfg: NavigationConfig, step: AskBot, answer: BotAnswer | None) -> Done:
    """Finish a step with the bot's answer (`None`: the bot did not understand)."""
    state = step.state
    if answer is not None and (answer.variables or answer.bot_state is not None):
        state = state.evolve(
            variables=_merge(state.variables, answer.variables) if answer.variables else None,
            bot_state=answer.bot_state,
        )

    if step.purpose == "greeting":
        if answer is None:
            g = cfg.greeting
            reply = _reply(cfg, state, g.greeting_words, Action.BROADCAST, "{}", g.interruptible)
        else:
            reply = _answer_reply(cfg, state, answer, asking_back=False)
        return _done(state, reply, "greeting")

    # An answer to the caller's input: apply the input's effects now.
    if answer is None:
        return _unrecognized(cfg, _input_state(state))
    asking_back = (
        cfg.asking_back.enabled and answer.action is Action.BROADCAST and not answer.expects_input
    )
    reply = _answer_reply(cfg, state, answer, asking_back)
    return _done(
        state,
        reply,
        "answer",
        unrecognized=0,
        silences=0,
        asking_back=asking_back,
        turn=state.turn + 1,
    )


def _answer_reply(
    cfg: NavigationConfig, state: DialogueState, answer: BotAnswer, asking_back: bool
) -> Reply:
    text = answer.text
    if asking_back:
        question = cfg.asking_back.prompt.render(state.variables)
        text = f"{text} {question}" if text else question
    return _reply(cfg, state, text, answer.action, answer.action_params, answer.interruptible)


def _miss(
    cfg: NavigationConfig,
    state: DialogueState,
    rule: UnrecognizingConfig | SilenceTimeoutConfig,
    count: int,
) -> tuple[Reply, bool]:
    """The reply to one more miss, and whether it reached the threshold."""
    if count >= rule.threshold:
        final = _reply(
            cfg, state, rule.final_prompt, rule.final_action, rule.final_action_params, False
        )
        return final, True
    return _reply(cfg, state, rule.prompt, Action.BROADCAST, "{}", True), False


def _unrecognized(cfg: NavigationConfig, state: DialogueState) -> Done:
    count = state.unrecognized + 1
    reply, final = _miss(cfg, state, cfg.unrecognizing, count)
    if final:
        return _done(state, reply, "unrecognized_final", unrecognized=0, asking_back=False)
    return _done(state, reply, "unrecognized", unrecognized=count, asking_back=False)


def silence(cfg: NavigationConfig, state: DialogueState, op: SilenceTimeout) -> Done:
    """SilenceTimeout: the caller said nothing for SilenceTimeoutConfig.Timeout seconds.

    An asking-back question stays pending through a silence: the caller may
    still answer it.
    """
    state = state.evolve(turn=state.turn + 1, variables=_merge(state.variables, op.variables))
    count = state.silences + 1
    reply, final = _miss(cfg, state, cfg.silence_timeout, count)
    if final:
        return _done(state, reply, "silence_final", silences=0, asking_back=False)
    return _done(state, reply, "silence", silences=count)


def fallback_reply(cfg: NavigationConfig, variables: Mapping[str, str]) -> Reply:
    """The instance's fallback: an apology, then its final action."""
    f = cfg.fallback
    text = f.prompt.render(variables)
    wait = cfg.silence_timeout.timeout if f.final_action is Action.BROADCAST else 0
    return Reply(text, f.final_action, False, f.final_action_params, wait)


def fallback(cfg: NavigationConfig, step: AskBot) -> Done:
    """Finish a step whose bot failed or missed the turn budget."""
    state = step.state
    if step.purpose == "greeting":
        g = cfg.greeting
        reply = _reply(cfg, state, g.greeting_words, Action.BROADCAST, "{}", g.interruptible)
        return _done(state, reply, "fallback")
    state = _input_state(state)
    return _done(state, fallback_reply(cfg, state.variables), "fallback", asking_back=False)

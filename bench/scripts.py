"""Scripted calls: what a simulated caller does, step by step.

A call begins, says 3 to 6 things, keys one DTMF entry, stays silent once
and hangs up. Every step gets an answer from the gateway (a turn). The
scripts are drawn once from a seeded generator, so every run and every
front door plays the same calls. The utterances are ones the demo instance
answers with a Broadcast (no transfer, no hang-up), so a call never ends
early and every front door does the same work.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Kind = Literal["begin", "say", "digits", "silence", "end"]

UTTERANCES = (
    "查询余额",
    "查余额",
    "check my balance",
    "营业时间是几点",
    "opening hours",
    "我的账号123456789",
)
DIGITS = "1"  # the main menu's balance option
BALANCE = "100"  # the conversation variable the answers read
SEED = 8
SCRIPTS = 64


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the caller does; `text` is the utterance or the digits."""

    kind: Kind
    text: str = ""


@dataclass(frozen=True, slots=True)
class Script:
    """A whole call, begin to end."""

    steps: tuple[Step, ...]

    def __len__(self) -> int:
        return len(self.steps)


def make(rng: random.Random) -> Script:
    """Begin, 3-6 utterances with the DTMF entry and the silence among them, end."""
    middle = [Step("say", rng.choice(UTTERANCES)) for _ in range(rng.randint(3, 6))]
    middle.insert(rng.randint(1, len(middle)), Step("digits", DIGITS))
    middle.insert(rng.randint(1, len(middle)), Step("silence"))
    return Script((Step("begin"), *middle, Step("end")))


def scripts(count: int = SCRIPTS, seed: int = SEED) -> tuple[Script, ...]:
    """The run's calls: call n plays scripts[n % count]."""
    rng = random.Random(seed)
    return tuple(make(rng) for _ in range(count))


def mean_turns(plays: tuple[Script, ...]) -> float:
    """Turns per call, on average over the scripts."""
    return sum(len(s) for s in plays) / len(plays)

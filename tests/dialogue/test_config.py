from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from gateway.dialogue.config import ConfigProblem, parse_navigation
from gateway.dialogue.operations import Action
from tests.conftest import DEMO


def demo() -> dict[str, Any]:
    return tomllib.loads(DEMO.read_text(encoding="utf-8"))


def test_demo_navigation_parses_with_seed_field_names() -> None:
    cfg = parse_navigation(demo())
    assert cfg.unrecognizing.threshold == 3
    assert cfg.unrecognizing.final_action is Action.TRANSFER_TO_AGENT
    assert cfg.silence_timeout.timeout == 10
    assert cfg.asking_back.enabled and cfg.asking_back.enable_negative_feedback
    assert cfg.complaining.action_params == '{"skillGroupId": "complaints"}'


@pytest.mark.parametrize(
    ("path", "value", "key", "problem"),
    [
        (
            ("UnrecognizingConfig", "Threshold"),
            0,
            "UnrecognizingConfig.Threshold",
            "between 1 and 100",
        ),
        (("UnrecognizingConfig", "Threshold"), "three", "UnrecognizingConfig.Threshold", "integer"),
        (
            ("SilenceTimeoutConfig", "FinalAction"),
            "Explode",
            "SilenceTimeoutConfig.FinalAction",
            "one of",
        ),
        (
            ("ComplainingConfig", "ActionParams"),
            "[1]",
            "ComplainingConfig.ActionParams",
            "JSON object",
        ),
        (
            ("ComplainingConfig", "ActionParams"),
            "{nope",
            "ComplainingConfig.ActionParams",
            "not valid JSON",
        ),
        (("GreetingConfig", "GreetingWords"), "  ", "GreetingConfig.GreetingWords", "empty"),
        (
            ("RepeatingConfig", "Utterances"),
            "again",
            "RepeatingConfig.Utterances",
            "list of strings",
        ),
        (("AskingBackConfig", "Enabled"), "maybe", "AskingBackConfig.Enabled", "true or false"),
    ],
)
def test_invalid_navigation_names_key_and_problem(
    path: tuple[str, str], value: object, key: str, problem: str
) -> None:
    data = copy.deepcopy(demo())
    data[path[0]][path[1]] = value
    with pytest.raises(ConfigProblem) as exc:
        parse_navigation(data)
    assert exc.value.key == key
    assert problem in exc.value.problem


def test_missing_required_table_is_named() -> None:
    data = demo()
    del data["SilenceTimeoutConfig"]
    with pytest.raises(ConfigProblem, match="SilenceTimeoutConfig: missing table"):
        parse_navigation(data)


def test_negative_feedback_needs_utterances() -> None:
    data = demo()
    data["AskingBackConfig"]["NegativeFeedbackUtterances"] = []
    with pytest.raises(ConfigProblem, match="NegativeFeedbackUtterances"):
        parse_navigation(data)

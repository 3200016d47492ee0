from __future__ import annotations

import pytest

from gateway import errors
from gateway.api.actions import DIALOGUE_ACTIONS, context, optional, required
from gateway.dialogue.operations import BeginDialogue, CollectedNumber, Dialogue, EndDialogue


def test_required_and_optional_enforce_presence_and_caps() -> None:
    assert required({"A": "x"}, "A", 5) == "x"
    with pytest.raises(errors.MissingParameter) as exc:
        required({"A": "  "}, "A", 5)
    assert exc.value.code == "MissingA" and exc.value.status == 400
    with pytest.raises(errors.InvalidParameter, match="longer than 5"):
        required({"A": "123456"}, "A", 5)
    assert optional({}, "B", 5) == ""
    with pytest.raises(errors.InvalidParameter):
        optional({"B": "123456"}, "B", 5)


def test_context_becomes_string_variables() -> None:
    raw = '{"s": "v", "n": 12.5, "t": true, "z": null, "o": {"a": [1]}}'
    assert context({"C": raw}, "C") == {
        "s": "v",
        "n": "12.5",
        "t": "true",
        "z": "",
        "o": '{"a":[1]}',
    }
    assert context({}, "C") == {}
    assert context({"C": " "}, "C") == {}


@pytest.mark.parametrize(
    "raw",
    [
        "[1]",
        '"text"',
        "{bad",
        "{" + ",".join(f'"k{i}": 1' for i in range(65)) + "}",
        '{"' + "k" * 65 + '": 1}',
    ],
)
def test_context_refuses_what_is_not_a_small_json_object(raw: str) -> None:
    with pytest.raises(errors.InvalidParameter):
        context({"C": raw}, "C")


def test_actions_build_their_operations() -> None:
    begin = DIALOGUE_ACTIONS["BeginDialogue"].build(
        {"CallingNumber": "1", "InitialContext": '{"a": "b"}'}
    )
    assert begin == BeginDialogue("1", "", {"a": "b"})
    assert isinstance(DIALOGUE_ACTIONS["Dialogue"].build({"Utterance": "hi"}), Dialogue)
    assert DIALOGUE_ACTIONS["CollectedNumber"].build({"Number": "12#"}) == CollectedNumber("12#")
    assert isinstance(DIALOGUE_ACTIONS["EndDialogue"].build({}), EndDialogue)
    with pytest.raises(errors.InvalidParameter):
        DIALOGUE_ACTIONS["CollectedNumber"].build({"Number": "1x"})
    debug = DIALOGUE_ACTIONS["DebugDialogue"]
    assert debug.debug and debug.operation == "Dialogue"

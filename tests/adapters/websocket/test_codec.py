"""The ivrgw.v1 codec, pure: client frames to messages, replies to gateway frames."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from adapters.websocket import codec, eager
from adapters.websocket.transport import parse_config
from gateway.calls.events import (
    CallEnded,
    CallStarted,
    DigitsEntered,
    NoInput,
    UserSaid,
)
from gateway.dialogue.config import ConfigProblem
from gateway.dialogue.operations import Action, Reply


def test_codec_parses_every_client_message() -> None:
    start = codec.parse(
        '{"type":"start","id":1,"call_id":"c-1","instance_id":"demo","calling":"138",'
        '"called":"95555","context":{"name":"Li","balance":42}}'
    )
    assert start == codec.Turn(
        1, CallStarted("c-1", "demo", "138", "95555", {"name": "Li", "balance": "42"})
    )
    assert codec.parse(
        '{"type":"utterance","id":"u","call_id":"c-1","text":"hi","confidence":1}'
    ) == codec.Turn("u", UserSaid("c-1", "hi", 1.0))
    assert codec.parse('{"type":"digits","id":2,"call_id":"c-1","digits":"12#"}') == codec.Turn(
        2, DigitsEntered("c-1", "12")
    )
    assert codec.parse('{"type":"no_input","id":3,"call_id":"c-1"}') == codec.Turn(
        3, NoInput("c-1")
    )
    assert codec.parse('{"type":"end","id":4,"call_id":"c-1"}') == codec.Turn(
        4, CallEnded("c-1", "NORMAL_CLEARING")
    )
    assert codec.parse('{"type":"end","id":4,"call_id":"c-1","cause":"USER_BUSY"}') == codec.Turn(
        4, CallEnded("c-1", "USER_BUSY")
    )
    assert codec.parse('{"type":"resume","id":5,"call_ids":["a","b"]}') == codec.Resume(
        5, ("a", "b")
    )
    assert codec.parse('{"type":"ping"}') == codec.Ping(None)
    assert codec.parse(b'{"type":"ping","id":"p"}') == codec.Ping("p")


def test_codec_start_takes_the_default_instance_and_ignores_unknown_fields() -> None:
    message = codec.parse('{"type":"start","id":1,"call_id":"c","later":true}', "demo")
    assert message == codec.Turn(1, CallStarted("c", "demo", "", "", {}))


def test_codec_a_non_final_utterance_is_a_partial() -> None:
    frame = '{"type":"utterance","id":1,"call_id":"c","text":"ba","final":false}'
    assert codec.parse(frame) == codec.Partial(1, "c")


@pytest.mark.parametrize(
    ("frame", "code", "mid", "call_id"),
    [
        ("{nope", "InvalidJson", None, None),
        ("[1, 2]", "InvalidJson", None, None),
        ('{"id": 1}', "UnknownType", 1, None),
        ('{"type": "dance", "id": 1}', "UnknownType", 1, None),
        ('{"type": ["start"], "id": 1}', "UnknownType", 1, None),
        ('{"type": "digits", "call_id": "c", "digits": "1"}', "MissingId", None, None),
        (
            '{"type": "digits", "id": [1], "call_id": "c", "digits": "1"}',
            "InvalidParameter",
            None,
            None,
        ),
        ('{"type": "digits", "id": 1, "digits": "1"}', "MissingCallId", 1, None),
        ('{"type": "no_input", "id": 1, "call_id": 7}', "InvalidParameter", 1, None),
        ('{"type": "no_input", "id": 1, "call_id": "a b"}', "InvalidParameter", 1, None),
        ('{"type": "start", "id": 1, "call_id": "c"}', "MissingInstanceId", 1, "c"),
        (
            '{"type": "start", "id": 1, "call_id": "c", "instance_id": 5}',
            "InvalidParameter",
            1,
            "c",
        ),
        (
            '{"type": "start", "id": 1, "call_id": "c", "instance_id": "d", "context": [1]}',
            "InvalidParameter",
            1,
            "c",
        ),
        (
            '{"type": "start", "id": 1, "call_id": "c", "instance_id": "d", "calling": 138}',
            "InvalidParameter",
            1,
            "c",
        ),
        ('{"type": "utterance", "id": 1, "call_id": "c"}', "InvalidParameter", 1, "c"),
        (
            '{"type": "utterance", "id": 1, "call_id": "c", "text": "x", "final": "no"}',
            "InvalidParameter",
            1,
            "c",
        ),
        (
            '{"type": "utterance", "id": 1, "call_id": "c", "text": "x", "confidence": 2}',
            "InvalidParameter",
            1,
            "c",
        ),
        (
            '{"type": "utterance", "id": 1, "call_id": "c", "text": "x", "confidence": true}',
            "InvalidParameter",
            1,
            "c",
        ),
        (
            '{"type": "digits", "id": 1, "call_id": "c", "digits": "12x"}',
            "InvalidParameter",
            1,
            "c",
        ),
        ('{"type": "digits", "id": 1, "call_id": "c", "digits": ""}', "InvalidParameter", 1, "c"),
        ('{"type": "end", "id": 1, "call_id": "c", "cause": 16}', "InvalidParameter", 1, "c"),
        ('{"type": "resume", "id": 1, "call_ids": []}', "InvalidParameter", 1, None),
        ('{"type": "resume", "id": 1, "call_ids": "c"}', "InvalidParameter", 1, None),
    ],
)
def test_codec_refuses_bad_frames_with_a_code(
    frame: str, code: str, mid: object, call_id: str | None
) -> None:
    with pytest.raises(codec.WireError) as caught:
        codec.parse(frame)
    assert (caught.value.code, caught.value.id, caught.value.call_id) == (code, mid, call_id)
    assert caught.value.message


def test_codec_renders_an_action_with_its_input() -> None:
    reply = Reply("Hello", Action.BROADCAST, True, '{"skill": "a"}', 8)
    assert orjson.loads(codec.action("c", 7, reply)) == {
        "type": "action",
        "call_id": "c",
        "id": 7,
        "action": "Broadcast",
        "text": "Hello",
        "interruptible": True,
        "action_params": {"skill": "a"},
        "input": {"wait_ms": 8000, "max_digits": 32, "terminator": "#"},
    }


def test_codec_renders_a_final_action_without_input_and_a_resumed_one() -> None:
    reply = Reply("Bye", Action.HANG_UP, False, "{}", 0)
    frame = orjson.loads(codec.action("c", "x", reply, resumed=True))
    assert frame["input"] is None and frame["action_params"] == {} and frame["resumed"] is True
    # ActionParams that are not a JSON object never break the frame.
    broken = orjson.loads(codec.action("c", 1, reply._replace(action_params="{oops")))
    assert broken["action_params"] == {}


def test_codec_renders_ended_error_and_pong() -> None:
    assert orjson.loads(codec.ended("c", 3)) == {"type": "ended", "call_id": "c", "id": 3}
    assert orjson.loads(codec.error("UnknownCall", "no", 4, "c")) == {
        "type": "error",
        "id": 4,
        "code": "UnknownCall",
        "message": "no",
        "call_id": "c",
    }
    assert orjson.loads(codec.error("InvalidJson", "bad")) == {
        "type": "error",
        "id": None,
        "code": "InvalidJson",
        "message": "bad",
    }
    assert orjson.loads(codec.pong("p")) == {"type": "pong", "id": "p"}


# -- eager: a coroutine run inline until it suspends ------------------------------


async def _plain() -> int:
    return 1


async def _waits(fut: asyncio.Future[int]) -> int:
    await asyncio.sleep(0)
    return await fut + 1


def test_eager_start_finishes_a_coroutine_that_never_suspends() -> None:
    assert eager.start(_plain()) == (True, 1)


def test_eager_finish_carries_on_after_a_future_and_a_bare_yield() -> None:
    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        coro = _waits(fut)
        done, waiting = eager.start(coro)
        assert not done
        task = loop.create_task(eager.finish(coro, waiting))
        await asyncio.sleep(0)
        fut.set_result(41)
        failing: asyncio.Future[int] = loop.create_future()
        other = _waits(failing)
        _, waiting = eager.start(other)
        failed = loop.create_task(eager.finish(other, waiting))
        await asyncio.sleep(0)
        failing.set_exception(ValueError("backend"))
        try:
            await failed
        except ValueError as exc:
            message = str(exc)
        return await task, message

    assert asyncio.run(main()) == (42, "backend")


def test_eager_finish_cancelled_cancels_the_coroutine() -> None:
    cleaned: list[bool] = []

    async def held(fut: asyncio.Future[None]) -> None:
        try:
            await fut
        finally:
            cleaned.append(fut.cancelled())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        coro = held(fut)
        _, waiting = eager.start(coro)
        task = loop.create_task(eager.finish(coro, waiting))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cleaned == [True]


# -- [adapters.websocket] ----------------------------------------------------------


def test_config_defaults() -> None:
    config = parse_config({"enabled": True}, "adapters.websocket")
    assert config.path == "/ws" and config.tokens == () and config.grace_seconds == 30
    limits = config.limits
    assert (limits.send_queue, limits.max_frame_bytes, limits.rate, limits.burst) == (
        256,
        16_384,
        1_000,
        2_000,
    )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"tokens": ["short"]}, "adapters.websocket.tokens"),
        ({"tokens": "x" * 20}, "adapters.websocket.tokens"),
        ({"path": "ws"}, "adapters.websocket.path"),
        ({"grace_seconds": -1}, "adapters.websocket.grace_seconds"),
        ({"grace_seconds": "30"}, "adapters.websocket.grace_seconds"),
        ({"send_queue": 0}, "adapters.websocket.send_queue"),
        ({"max_frame_bytes": 10}, "adapters.websocket.max_frame_bytes"),
        ({"rate": 0}, "adapters.websocket.rate"),
        ({"burst": True}, "adapters.websocket.burst"),
    ],
)
def test_config_names_the_bad_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config(table, "adapters.websocket")
    assert caught.value.key == key

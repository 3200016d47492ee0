"""The LLM bot: pure parts by direct calls, the bot over the real pool against a fake server.

The event loop is driven with asyncio.run (the project has no async test plugin).
Every fake server and pool is closed by `drive`, whatever the test does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import pytest

from gateway.bots.llm import (
    DIGITS_MESSAGE,
    GREETING_MESSAGE,
    LlmBot,
    LlmConfig,
    ModelReply,
    StreamAccumulator,
    bound_history,
    cut_at_sentence_end,
    dump_history,
    load_history,
    parse_completion,
    split_events,
    split_tags,
    spoken_reply,
    user_message,
)
from gateway.dialogue.bot import BotAnswer, BotContext, BotQuery
from gateway.dialogue.config import ConfigProblem
from gateway.dialogue.operations import Action
from gateway.errors import (
    BackendConnectError,
    BackendError,
    BackendProtocolError,
    BackendStatus,
    BackendTimeout,
)
from gateway.net.pool import Pool
from tests.conftest import free_port
from tests.fake_openai import Canned, FakeOpenAI, serve, text, tool_call

KEY = "sk-test-0123456789-secret"
CONTEXT = BotContext("inst-1", "conv-1")


def table(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "llm",
        "name": "assistant",
        "url": "http://127.0.0.1:9100/v1/chat/completions",
        "model": "fake-model",
        "system_prompt": "You answer for ${company}. Caller: ${caller}.",
        "api_key": KEY,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def query(
    said: str, kind: str = "utterance", state: str = "", variables: dict[str, str] | None = None
) -> BotQuery:
    return BotQuery(kind, said, said.lower(), variables or {}, state, 1)  # type: ignore[arg-type]


# -- config -------------------------------------------------------------------


def test_config_defaults_and_repr_hide_the_key() -> None:
    cfg = LlmConfig.from_table(
        table(url="https://llm.example/v1/chat/completions?tenant=x"), "bots[0]"
    )
    assert (cfg.max_tokens, cfg.temperature, cfg.timeout_ms, cfg.stream) == (256, None, 1500, True)
    assert (cfg.history_turns, cfg.history_chars, cfg.max_body) == (8, 4000, 1_048_576)
    assert cfg.transfer_action_params == "{}" and cfg.api_key == KEY and cfg.tools
    assert KEY not in repr(cfg) and "tenant" not in repr(cfg)
    assert (
        cfg.system_prompt.render({"company": "ACME", "caller": "Li"})
        == "You answer for ACME. Caller: Li."
    )


def test_config_transfer_params_table_or_string_become_compact_json() -> None:
    as_table = LlmConfig.from_table(table(transfer_action_params={"skillGroupId": "support"}), "b")
    as_text = LlmConfig.from_table(
        table(transfer_action_params='{ "skillGroupId" : "support" }'), "b"
    )
    assert (
        as_table.transfer_action_params
        == as_text.transfer_action_params
        == '{"skillGroupId":"support"}'
    )


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"url": None}, "bots[2].url", "missing"),
        ({"url": "ftp://host/x"}, "bots[2].url", "http:// or https://"),
        ({"url": "http:///v1/chat/completions"}, "bots[2].url", "with a host"),
        ({"url": f"https://user:{KEY}@host/v1"}, "bots[2].url", "credentials"),
        ({"url": "http://host:99999/v1"}, "bots[2].url", "not a valid URL"),
        ({"model": " "}, "bots[2].model", "must not be empty"),
        ({"name": None}, "bots[2].name", "missing"),
        ({"api_key": KEY + "\r\nX-Evil: 1"}, "bots[2].api_key", "printable ASCII"),
        ({"api_key": 12}, "bots[2].api_key", "must be a string"),
        ({"max_tokens": 0}, "bots[2].max_tokens", "between"),
        ({"temperature": "hot"}, "bots[2].temperature", "must be a number"),
        ({"temperature": 3}, "bots[2].temperature", "between 0 and 2"),
        ({"stream": "yes"}, "bots[2].stream", "true or false"),
        ({"history_turns": -1}, "bots[2].history_turns", "between"),
        ({"transfer_action_params": "[1]"}, "bots[2].transfer_action_params", "JSON object"),
        ({"transfer_action_params": "{"}, "bots[2].transfer_action_params", "not valid JSON"),
        ({"max_tokenz": 10}, "bots[2].max_tokenz", "unknown key"),
    ],
)
def test_config_problems_name_the_key_and_never_the_secret(
    overrides: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigProblem) as err:
        LlmConfig.from_table(table(**overrides), "bots[2]")
    assert err.value.key == key and problem in err.value.problem
    assert KEY not in str(err.value)


def test_config_without_api_key_or_system_prompt() -> None:
    cfg = LlmConfig.from_table(table(api_key=None, system_prompt=None, temperature=0.2), "b")
    assert cfg.api_key is None and cfg.system_prompt.source == "" and cfg.temperature == 0.2


# -- history ------------------------------------------------------------------


def test_history_bounded_by_turns_then_chars_oldest_first() -> None:
    h = [(f"u{i}", f"a{i}") for i in range(10)]  # 4 characters per exchange
    assert bound_history(h, 3, 1000) == h[-3:]
    assert bound_history(h, 8, 10) == h[-2:]
    assert bound_history(h, 0, 1000) == [] and bound_history(h, 5, 0) == []
    # The newest exchange alone is over the budget: nothing older is kept either.
    assert bound_history([("a", "b"), ("x" * 50, "y")], 8, 20) == []


def test_history_round_trips_and_foreign_state_starts_over() -> None:
    h = [("hello", "hi there"), ("bye", "goodbye")]
    state = dump_history(h)
    assert state == '[["hello","hi there"],["bye","goodbye"]]'
    assert load_history(state) == h
    assert dump_history([]) == ""
    for foreign in ("", "main", "{}", '[["a"]]', "[[1,2]]", '{"a": 1}', "[", '[["a","b"],3]'):
        assert load_history(foreign) == []


def test_user_message_wording_for_digits_and_greeting() -> None:
    assert user_message(query("I lost my card")) == "I lost my card"
    assert user_message(query("12#", "digits")) == DIGITS_MESSAGE.format(digits="12#")
    assert user_message(query("12#", "digits")) == "The caller pressed keys: 12#"
    greeting = user_message(query("welcome", "intent"))
    assert greeting == GREETING_MESSAGE.format(intent="welcome")
    assert greeting.startswith("The call has just started (intent: welcome).")


# -- SSE framing and stream folding --------------------------------------------


def test_split_events_lines_fields_and_rest() -> None:
    wire = b': comment\n\ndata: {"a":1}\n\nevent: x\ndata: two\ndata:  lines\n\nid: 3\n\ndata: part'
    events, rest = split_events(wire)
    assert events == [b'{"a":1}', b"two\n lines"]
    assert rest == b"data: part"
    assert split_events(b"data: a\r\n\r\ndata: b\r\rdata: c\r") == ([b"a", b"b"], b"data: c\r")
    # A CR ending an event is used at once; the LF of its CRLF, arriving later, is a blank line.
    assert split_events(b"data: a\r\n\r") == ([b"a"], b"")
    assert split_events(b"\ndata: b\r\n\r\n") == ([b"b"], b"")
    assert split_events(b"data\n\n") == ([b""], b"")
    assert split_events(b"") == ([], b"")


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_events_same_whatever_the_chunking(newline: bytes) -> None:
    wire = b"".join(b"data: " + d + newline + newline for d in (b"[1]", b'{"x":"y"}', b"[DONE]"))
    for size in (1, 2, 3, 7, len(wire)):
        events: list[bytes] = []
        buffer = b""
        for i in range(0, len(wire), size):
            got, buffer = split_events(buffer + wire[i : i + size])
            events += got
        # Whatever is left is at most the blank-line LF of a CRLF split across chunks.
        assert events == [b"[1]", b'{"x":"y"}', b"[DONE]"] and buffer.strip(b"\n") == b"", size


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_accumulator_joins_text_and_tool_call_pieces() -> None:
    acc = StreamAccumulator()
    assert acc.empty
    acc.feed(chunk({"role": "assistant", "content": ""}))
    assert acc.empty
    acc.feed(chunk({"content": "One moment"}))
    acc.feed(chunk({"content": "."}))
    head = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "transfer_", "arguments": ""},
    }
    acc.feed(chunk({"tool_calls": [head]}))
    acc.feed(
        chunk(
            {"tool_calls": [{"index": 0, "function": {"name": "to_agent", "arguments": '{"rea'}}]}
        )
    )
    acc.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'son":"billing"}'}}]}))
    acc.feed(
        {"choices": [{"index": 0, "finish_reason": "tool_calls"}]}
    )  # a last chunk may omit delta
    acc.feed({"choices": [], "usage": {"total_tokens": 3}})
    assert acc.reply() == ModelReply(
        "One moment.", Action.TRANSFER_TO_AGENT, "billing", "tool_calls"
    )
    assert "billing" not in repr(acc)


@pytest.mark.parametrize(
    "bad",
    [
        [1],
        {"choices": "x"},
        {"choices": [{"delta": 3}]},
        chunk({"content": 5}),
        chunk({"tool_calls": [{"index": "0"}]}),
    ],
)
def test_stream_accumulator_refuses_wrong_shapes(bad: object) -> None:
    with pytest.raises(BackendProtocolError):
        StreamAccumulator().feed(bad)


def test_stream_error_object_is_a_status_error_without_its_message() -> None:
    with pytest.raises(BackendStatus) as err:
        StreamAccumulator().feed(
            {"error": {"message": f"bad key {KEY}", "type": "invalid_request_error"}}
        )
    assert "invalid_request_error" in str(err.value) and KEY not in str(err.value)


def test_parse_completion_text_tools_and_shapes() -> None:
    body = {
        "choices": [{"message": {"content": "Hi.", "tool_calls": None}, "finish_reason": "stop"}]
    }
    assert parse_completion(orjson.dumps(body)) == ModelReply("Hi.", None, "", "stop")
    call = {"type": "function", "function": {"name": "hang_up", "arguments": "not json"}}
    body = {"choices": [{"message": {"content": None, "tool_calls": [call]}}]}
    assert parse_completion(orjson.dumps(body)) == ModelReply("", Action.HANG_UP, "", None)
    for bad in (
        b"<html>",
        b"[]",
        b'{"choices": []}',
        b'{"choices": [{"text": "x"}]}',
        b'{"choices": [{"message": {"content": 1}}]}',
    ):
        with pytest.raises(BackendProtocolError):
            parse_completion(bad)


# -- tags and sentence cuts ----------------------------------------------------


def test_split_tags_removes_tags_and_maps_the_first() -> None:
    assert split_tags("Goodbye. [[HANGUP]]") == ("Goodbye.", Action.HANG_UP)
    assert split_tags("[[ transfer ]] Connecting you now.") == (
        "Connecting you now.",
        Action.TRANSFER_TO_AGENT,
    )
    assert split_tags("One [[TRANSFER]] moment [[HANGUP]]") == (
        "One moment",
        Action.TRANSFER_TO_AGENT,
    )
    assert split_tags("  plain [[OTHER]] ") == ("plain [[OTHER]]", None)


def test_cut_at_sentence_end() -> None:
    assert cut_at_sentence_end("Hello there. How can") == "Hello there."
    assert cut_at_sentence_end("Is it you? Yes! And") == "Is it you? Yes!"
    assert cut_at_sentence_end("您好。请问") == "您好。"
    assert cut_at_sentence_end("是你吗？好的！然后") == "是你吗？好的！"
    assert cut_at_sentence_end('He said "stop." Then') == 'He said "stop."'
    assert cut_at_sentence_end("It costs 3.5 euros and") == ""
    assert cut_at_sentence_end("no end at all") == ""


def test_spoken_reply_cuts_incomplete_and_length_limited_replies() -> None:
    assert spoken_reply(ModelReply("Hi. How ar", complete=False)) == ("Hi.", None)
    assert spoken_reply(ModelReply("How ar", complete=False)) == ("", None)
    assert spoken_reply(ModelReply("Bye. [[HANGUP]] and", complete=False)) == (
        "Bye.",
        Action.HANG_UP,
    )
    assert spoken_reply(ModelReply("Hi. How ar", finish_reason="length")) == ("Hi.", None)
    assert spoken_reply(ModelReply("How ar", finish_reason="length")) == ("How ar", None)
    assert spoken_reply(ModelReply("Hi. How ar")) == ("Hi. How ar", None)


# -- the bot over the real pool against the fake server -------------------------

Scenario = Callable[[FakeOpenAI, LlmBot], Awaitable[None]]


def drive(scenario: Scenario, replies: Iterable[Canned] = (), **overrides: Any) -> FakeOpenAI:
    """Run `scenario` with a started fake server and a bot on a real Pool; close both."""
    server = serve(replies)

    async def main() -> None:
        await server.start()
        pool = Pool()
        try:
            cfg = LlmConfig.from_table(table(url=server.url, **overrides), "bots[0]")
            await scenario(server, LlmBot(cfg, pool))
        finally:
            await pool.aclose()
            await server.stop()

    asyncio.run(main())
    return server


VARS = {"company": "ACME", "caller": "Li"}


@pytest.mark.parametrize("stream", [False, True])
def test_llm_answer_and_request_shape(stream: bool) -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        answer = await bot.ask(query("Where is my parcel?", variables=VARS), CONTEXT, 5.0)
        assert answer is not None
        said = "It left the depot this morning. Anything else?"
        assert answer == BotAnswer(
            said,
            Action.BROADCAST,
            "{}",
            True,
            bot_state=dump_history([("Where is my parcel?", said)]),
            expects_input=True,
        )

    server = drive(
        scenario,
        [text("It left the depot this morning. Anything else?", split=True)],
        stream=stream,
        max_tokens=99,
        temperature=0.3,
    )
    (seen,) = server.requests
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body["model"] == "fake-model" and seen.body["max_tokens"] == 99
    assert seen.body["stream"] is stream and seen.body["temperature"] == 0.3
    assert [t["function"]["name"] for t in seen.body["tools"]] == ["transfer_to_agent", "hang_up"]
    assert seen.messages == [
        {"role": "system", "content": "You answer for ACME. Caller: Li."},
        {"role": "user", "content": "Where is my parcel?"},
    ]


def test_llm_history_is_carried_in_bot_state_and_bounded() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        state = ""
        for n in range(5):
            answer = await bot.ask(query(f"question {n}", state=state), CONTEXT, 5.0)
            assert answer is not None and answer.text == f"Answer {n}."
            state = answer.bot_state or ""
            assert load_history(state)[-1] == (f"question {n}", f"Answer {n}.")
            assert len(load_history(state)) <= 3

    replies = [text(f"Answer {n}.") for n in range(5)]
    server = drive(scenario, replies, history_turns=3, history_chars=1000, system_prompt=None)
    assert [len(s.messages) for s in server.requests] == [1, 3, 5, 7, 7]
    assert server.requests[4].messages[0] == {"role": "user", "content": "question 1"}
    assert server.requests[4].messages[-2:] == [
        {"role": "assistant", "content": "Answer 3."},
        {"role": "user", "content": "question 4"},
    ]
    # No system prompt configured: no system message.
    assert all(s.system is None for s in server.requests)
    # Each streamed body was read to its end, so one kept-alive connection served all turns.
    assert len({s.peer for s in server.requests}) == 1


def test_llm_history_chars_drop_the_oldest_exchanges() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        state = ""
        for n in range(4):
            answer = await bot.ask(query(f"q{n}" + "x" * 18, state=state), CONTEXT, 5.0)
            assert answer is not None
            state = answer.bot_state or ""
        # 20 + 10 characters per exchange, 70 allowed: the two newest remain.
        assert [u[:2] for u, _ in load_history(state)] == ["q2", "q3"]

    server = drive(scenario, [text(f"Answer {n:02d}.") for n in range(4)], history_chars=70)
    assert [len(s.messages) for s in server.requests] == [2, 4, 6, 6]


def test_llm_digits_and_greeting_are_worded_for_the_model() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        greeting = await bot.ask(query("welcome", "intent", variables=VARS), CONTEXT, 5.0)
        assert greeting is not None and greeting.text == "Welcome to ACME."
        digits = await bot.ask(query("4711#", "digits", greeting.bot_state or ""), CONTEXT, 5.0)
        assert digits is not None and digits.text == "Thanks."

    server = drive(scenario, [text("Welcome to ACME."), text("Thanks.")])
    assert (
        server.requests[0].last_user
        == "The call has just started (intent: welcome). Greet the caller with your opening line."
    )
    assert server.requests[1].last_user == "The caller pressed keys: 4711#"
    assert server.requests[1].messages[-2] == {"role": "assistant", "content": "Welcome to ACME."}


@pytest.mark.parametrize("stream", [False, True])
def test_llm_transfer_tool_call_becomes_transfer_to_agent(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.bots.llm")

    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        answer = await bot.ask(query("I want a human", state='[["hi","Hello."]]'), CONTEXT, 5.0)
        assert answer is not None
        assert answer.action is Action.TRANSFER_TO_AGENT
        assert answer.action_params == '{"skillGroupId":"support"}'
        assert answer.text == "Let me connect you." and not answer.interruptible
        assert load_history(answer.bot_state or "") == [
            ("hi", "Hello."),
            ("I want a human", "Let me connect you."),
        ]

    drive(
        scenario,
        [tool_call("transfer_to_agent", "asked for a person", said="Let me connect you.")],
        stream=stream,
        transfer_action_params={"skillGroupId": "support"},
    )
    (record,) = [r for r in caplog.records if r.getMessage() == "llm asked for an action"]
    assert record.__dict__["fields"]["reason"] == "asked for a person"


def test_llm_tool_call_without_text_still_acts() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        answer = await bot.ask(query("bye", state='[["a","b"]]'), CONTEXT, 5.0)
        assert answer is not None and answer.action is Action.HANG_UP and answer.text == ""
        assert answer.action_params == "{}" and answer.bot_state == '[["a","b"]]'

    drive(scenario, [tool_call("hang_up")])


@pytest.mark.parametrize("stream", [False, True])
def test_llm_hangup_tag_is_removed_and_maps_to_hang_up(stream: bool) -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        answer = await bot.ask(query("that's all"), CONTEXT, 5.0)
        assert answer is not None and answer.action is Action.HANG_UP
        assert answer.text == "Goodbye, have a nice day." and answer.action_params == "{}"

    server = drive(
        scenario, [text("Goodbye, have a nice day. [[HANGUP]]")], stream=stream, tools=False
    )
    assert "tools" not in server.requests[0].body


@pytest.mark.parametrize("stream", [False, True])
def test_llm_empty_reply_is_not_understood(stream: bool) -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        assert await bot.ask(query("mumble"), CONTEXT, 5.0) is None
        assert await bot.ask(query("mumble"), CONTEXT, 5.0) is None

    drive(scenario, [text(""), text("  ")], stream=stream)


def test_llm_stream_stalled_after_a_sentence_answers_the_sentence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gateway.bots.llm")

    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        answer = await bot.ask(query("tell me everything"), CONTEXT, 60.0)
        assert answer is not None and answer.text == "Your balance is 12 euros."
        assert answer.action is Action.BROADCAST
        assert load_history(answer.bot_state or "") == [
            ("tell me everything", "Your balance is 12 euros.")
        ]

    # Events: role, 5 words, then "and" arrives, then nothing.
    drive(scenario, [text("Your balance is 12 euros. And your", stall_after=7)], timeout_ms=1500)
    (record,) = [r for r in caplog.records if "cut" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.__dict__["fields"]["spoken"] == len("Your balance is 12 euros.")
    assert record.__dict__["fields"]["conversation_id"] == "conv-1"


def test_llm_stream_stalled_mid_sentence_is_a_timeout() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        with pytest.raises(BackendTimeout):
            await bot.ask(query("hello"), CONTEXT, 1.0)  # the turn's budget is below timeout_ms

    drive(scenario, [text("Well let me see", stall_after=3)], timeout_ms=60_000)


@pytest.mark.parametrize("stream", [False, True])
def test_llm_stall_before_any_byte_is_a_timeout(stream: bool) -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        with pytest.raises(BackendTimeout) as err:
            await bot.ask(query("hello"), CONTEXT, 60.0)
        assert KEY not in str(err.value)

    drive(scenario, [text("Never sent.", stall_after=0)], stream=stream, timeout_ms=500)


@pytest.mark.parametrize("stream", [False, True])
def test_llm_http_500_is_backend_status(stream: bool) -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        with pytest.raises(BackendStatus) as err:
            await bot.ask(query("hello"), CONTEXT, 5.0)
        assert "500" in str(err.value) and KEY not in str(err.value) and KEY not in repr(err.value)
        # The bot keeps working after a failed turn.
        answer = await bot.ask(query("hello"), CONTEXT, 5.0)
        assert answer is not None and answer.text == "Back again."

    drive(scenario, [Canned(status=500), text("Back again.")], stream=stream)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "raw",
    [
        b"this is not json",
        b'{"object": "chat.completion", "data": []}',
        b'{"choices": [{"message": "hi"}]}',
    ],
)
def test_llm_bad_bodies_are_protocol_errors(stream: bool, raw: bytes) -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        with pytest.raises(BackendProtocolError):
            await bot.ask(query("hello"), CONTEXT, 5.0)

    drive(scenario, [Canned(raw=raw)], stream=stream)


def test_llm_json_answer_to_a_stream_request_is_accepted() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        answer = await bot.ask(query("hello"), CONTEXT, 5.0)
        assert answer is not None and answer.text == "Hello."

    server = drive(scenario, [text("Hello.", plain_anyway=True)], stream=True)
    assert server.requests[0].headers["accept"] == "text/event-stream"


def test_llm_response_over_max_body_is_refused() -> None:
    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        with pytest.raises(BackendProtocolError):
            await bot.ask(query("hello"), CONTEXT, 5.0)

    drive(scenario, [text("word " * 600)], stream=True, max_body=2048)


def test_llm_client_errors_pass_through() -> None:
    async def main() -> None:
        pool = Pool()
        try:
            url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
            bot = LlmBot(LlmConfig.from_table(table(url=url), "bots[0]"), pool)
            with pytest.raises(BackendConnectError):
                await bot.ask(query("hello"), CONTEXT, 5.0)
            with pytest.raises(BackendTimeout):
                await bot.ask(query("hello"), CONTEXT, 0.0)
        finally:
            await pool.aclose()

    asyncio.run(main())


def test_llm_key_never_in_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BackendError] = []

    async def scenario(server: FakeOpenAI, bot: LlmBot) -> None:
        assert KEY not in repr(bot) and KEY not in repr(bot.config)
        for _ in range(3):
            try:
                await bot.ask(query("hello"), CONTEXT, 1.0)
            except BackendError as exc:
                errors.append(exc)
        await bot.ask(query("hello"), CONTEXT, 5.0)

    drive(
        scenario,
        [
            Canned(status=401),
            Canned(raw=b"{"),
            text("Hi. And", stall_after=3),
            tool_call("hang_up", "done"),
        ],
        timeout_ms=800,
    )
    assert len(errors) == 2
    assert all(KEY not in str(e) and KEY not in repr(e) for e in errors)
    assert caplog.records and KEY not in caplog.text

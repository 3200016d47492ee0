"""The LLM bot: one OpenAI-compatible `POST /v1/chat/completions` per turn.

Rules of this file:
- The pure parts (history bounds, SSE framing, folding stream chunks, reply
  parsing, action tags, sentence cuts) are plain functions and one small
  class without I/O, tested by direct calls. `LlmBot.ask` is the only
  coroutine: it makes one HTTP exchange through an `HttpClient`.
- What can be decided at start-up is: the headers (the API key included),
  the static part of the request body, the compiled system prompt.
- The API key lives in the config and the prebuilt headers only. No repr,
  log line or error message carries it.
- Failures are `BackendError`s: a non-2xx status or an error object in the
  body -> BackendStatus; bytes that are not the documented shape ->
  BackendProtocolError; the client's own errors pass through; running out of
  time -> BackendTimeout, unless a complete sentence arrived (below).

What the model is sent: the system prompt rendered from the conversation's
variables, the bounded history, and one user message: the caller's words
for an utterance, `DIGITS_MESSAGE` for keyed digits, `GREETING_MESSAGE` for
the greeting intent. Two tools are declared, `transfer_to_agent` and
`hang_up`; a call to either (or a `[[TRANSFER]]` / `[[HANGUP]]` tag in the
text, for models without tools) makes the answer that action, the text
spoken first. An empty reply with no action is "not understood" (None).

History is the bot's state: a compact JSON array of `[user, assistant]`
pairs, at most `history_turns` of them and `history_chars` characters in
all, oldest dropped first. When time runs out mid-stream the caller hears
the text up to its last sentence end; with none, the turn is a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypedDict
from urllib.parse import urlsplit

import orjson

from gateway.dialogue.bot import BotAnswer, BotContext, BotQuery
from gateway.dialogue.config import ConfigProblem, Reader, parse_action_params
from gateway.dialogue.operations import Action
from gateway.dialogue.template import Template, compile_template
from gateway.errors import (
    BackendBodyTooLarge,
    BackendProtocolError,
    BackendStatus,
    BackendTimeout,
)
from gateway.net.http import HttpClient

log = logging.getLogger("gateway.bots.llm")

DIGITS_MESSAGE: Final = "The caller pressed keys: {digits}"
GREETING_MESSAGE: Final = (
    "The call has just started (intent: {intent}). Greet the caller with your opening line."
)
TRANSFER_TOOL: Final = "transfer_to_agent"
HANG_UP_TOOL: Final = "hang_up"


def _tool(name: str, description: str) -> dict[str, Any]:
    reason = {"type": "string", "description": "Why, in a few words (for the call log)."}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": {"reason": reason}},
        },
    }


TOOLS: Final = (
    _tool(TRANSFER_TOOL, "Transfer the caller to a human agent, after your reply is spoken."),
    _tool(HANG_UP_TOOL, "End the call, after your reply (a goodbye) is spoken."),
)
_TOOL_ACTIONS: Final = {TRANSFER_TOOL: Action.TRANSFER_TO_AGENT, HANG_UP_TOOL: Action.HANG_UP}
# A tag takes the horizontal space before it along, so "Bye. [[HANGUP]]" speaks "Bye.".
_TAG = re.compile(r"[ \t]*\[\[\s*(TRANSFER|HANGUP)\s*\]\]", re.IGNORECASE)
_TAG_ACTIONS: Final = {"TRANSFER": Action.TRANSFER_TO_AGENT, "HANGUP": Action.HANG_UP}
# ASCII marks end a sentence before a space or the end ("3.5" does not);
# full-width marks always do. Closing quotes and brackets stay with the sentence.
_SENTENCE_END = re.compile(r"[.?!][\"'”’)\]]*(?=\s|$)|[。？！][”’」』）)]*")

_KEYS: Final = frozenset(
    ("kind", "name", "url", "api_key", "model", "system_prompt", "max_tokens", "temperature",
     "timeout_ms", "stream", "tools", "history_turns", "history_chars",
     "transfer_action_params", "max_body")
)  # fmt: skip
MAX_SYSTEM_PROMPT_CHARS: Final = 20_000
# A stream is read until this long (at most a tenth of the budget) before the
# budget ends, so a cut answer is back before the caller's own deadline fires.
STREAM_RESERVE: Final = 0.05


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


# -- config -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class LlmConfig:
    name: str
    url: str
    model: str
    system_prompt: Template
    api_key: str | None = None
    max_tokens: int = 256
    temperature: float | None = None
    timeout_ms: int = 1500
    stream: bool = True
    # Declare the two action tools; off for servers that refuse `tools`.
    tools: bool = True
    history_turns: int = 8
    history_chars: int = 4000
    transfer_action_params: str = "{}"
    max_body: int = 1_048_576

    @classmethod
    def from_table(cls, data: Mapping[str, Any], where: str) -> LlmConfig:
        """Validate a `[[bots]]` table (`kind` is the caller's and ignored)."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigProblem(f"{where}.{unknown[0]}", "unknown key")
        r = Reader(data, where)
        api_key = r.text("api_key", "", max_len=4096)
        # Printable ASCII only: anything else would break (or inject) a header.
        if not all(" " < c < "\x7f" for c in api_key):
            raise ConfigProblem(r.key("api_key"), "must be printable ASCII without spaces")
        return cls(
            name=_non_empty(r, "name", 64),
            url=_url(r),
            model=_non_empty(r, "model", 200),
            system_prompt=compile_template(
                r.text("system_prompt", "", max_len=MAX_SYSTEM_PROMPT_CHARS)
            ),
            api_key=api_key or None,
            max_tokens=r.integer("max_tokens", 1, 131_072, 256),
            temperature=_temperature(r),
            timeout_ms=r.integer("timeout_ms", 10, 600_000, 1500),
            stream=r.boolean("stream", True),
            tools=r.boolean("tools", True),
            history_turns=r.integer("history_turns", 0, 100, 8),
            history_chars=r.integer("history_chars", 0, 100_000, 4000),
            transfer_action_params=_compact_object(r, "transfer_action_params"),
            max_body=r.integer("max_body", 1024, 64 * 1_048_576, 1_048_576),
        )

    def __repr__(self) -> str:
        return (
            f"LlmConfig(name={self.name!r}, url={_public_url(self.url)!r}, "
            f"model={self.model!r}, stream={self.stream}, timeout_ms={self.timeout_ms})"
        )


def _non_empty(r: Reader, name: str, max_len: int) -> str:
    value = r.text(name, max_len=max_len)
    if not value.strip():
        raise ConfigProblem(r.key(name), "must not be empty")
    return value


def _url(r: Reader) -> str:
    # Problems never echo the URL: it is the one place a credential could hide.
    url = r.text("url", max_len=2048)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigProblem(r.key("url"), "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigProblem(r.key("url"), "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigProblem(r.key("url"), "must not carry credentials: use api_key")
    return url


def _public_url(url: str) -> str:
    """The URL without its query string, for reprs and logs."""
    return url.split("?", 1)[0]


def _temperature(r: Reader) -> float | None:
    value = r.data.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigProblem(r.key("temperature"), f"must be a number, got {type(value).__name__}")
    if not 0 <= value <= 2:
        raise ConfigProblem(r.key("temperature"), f"must be between 0 and 2, got {value}")
    return float(value)


def _compact_object(r: Reader, name: str) -> str:
    # A table or a JSON object string, stored as compact JSON for ActionParams.
    return orjson.dumps(orjson.loads(parse_action_params(r.data.get(name), r.key(name)))).decode()


# -- history ------------------------------------------------------------------

Exchange = tuple[str, str]  # (what the model was told, what it answered)


def load_history(state: str) -> list[Exchange]:
    """The exchanges in a bot state; none for a new conversation or a foreign state."""
    if not state:
        return []
    try:
        data = orjson.loads(state)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(data, list):
        return []
    exchanges: list[Exchange] = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2):
            return []
        user, assistant = item
        if not (isinstance(user, str) and isinstance(assistant, str)):
            return []
        exchanges.append((user, assistant))
    return exchanges


def bound_history(exchanges: Sequence[Exchange], turns: int, chars: int) -> list[Exchange]:
    """The newest exchanges within `turns` and `chars` in all; oldest dropped first."""
    kept: list[Exchange] = []
    total = 0
    for exchange in reversed(exchanges[-turns:] if turns > 0 else ()):
        total += len(exchange[0]) + len(exchange[1])
        if total > chars:
            break
        kept.append(exchange)
    kept.reverse()
    return kept


def dump_history(exchanges: Sequence[Exchange]) -> str:
    return orjson.dumps(exchanges).decode() if exchanges else ""


def user_message(query: BotQuery) -> str:
    """What the model is told the caller did this turn."""
    if query.kind == "digits":
        return DIGITS_MESSAGE.format(digits=query.text)
    if query.kind == "intent":
        return GREETING_MESSAGE.format(intent=query.text)
    return query.text


# -- the model's reply --------------------------------------------------------


class ModelReply(NamedTuple):
    text: str
    action: Action | None = None
    reason: str = ""
    finish_reason: str | None = None
    # False when time ran out before the stream ended.
    complete: bool = True


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The data of each complete server-sent event in `buffer`, and the rest.

    Lines end in LF, CRLF or CR; a blank line ends an event; `data:` lines
    join with LF; comments (`:`) and other fields are skipped, as are events
    without data. A CR at the very end that does not end an event is held
    back, as an LF may follow it; one that ends an event is used, and an LF
    after it only makes a harmless blank line.
    """
    text = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    end = text.rfind(b"\n\n")
    held = b""
    if buffer.endswith(b"\r") and end != len(text) - 2:
        text, held = text[:-1], b"\r"
        end = text.rfind(b"\n\n")
    if end < 0:
        return [], text + held
    events: list[bytes] = []
    for block in text[:end].split(b"\n\n"):
        data = [
            line[6:] if line.startswith(b"data: ") else line[5:]
            for line in block.split(b"\n")
            if line.startswith(b"data:") or line == b"data"
        ]
        if data:
            events.append(b"\n".join(data))
    return events, text[end + 2 :] + held


def _choice(data: object, part: str) -> tuple[Mapping[str, Any], object] | None:
    """`choices[0][part]` and `finish_reason`; None when `choices` is empty."""
    if not isinstance(data, dict):
        raise BackendProtocolError("LLM response is not a JSON object")
    error = data.get("error")
    if error is not None:
        # Only the error's type or code: its message may quote the request or the key.
        kind = (error.get("type") or error.get("code")) if isinstance(error, dict) else None
        raise BackendStatus(f"LLM reported an error: {str(kind or 'unknown')[:64]}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise BackendProtocolError("LLM response has no choices list")
    if not choices:
        return None
    first = choices[0]
    inner = first.get(part) if isinstance(first, dict) else None
    # A stream's last chunk may carry a finish_reason and no delta.
    if inner is None and part == "delta" and isinstance(first, dict) and first.get("finish_reason"):
        inner = {}
    if not isinstance(inner, dict):
        raise BackendProtocolError(f"LLM response has no choices[0].{part} object")
    return inner, first.get("finish_reason")


def _text_field(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BackendProtocolError(f"LLM response {what} is not a string")
    return value


def _reason(arguments: str) -> str:
    # Arguments are the model's JSON; a bad one costs the reason, not the action.
    try:
        parsed = orjson.loads(arguments) if arguments else None
    except orjson.JSONDecodeError:
        return ""
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason[:200] if isinstance(reason, str) else ""


def first_action(calls: Iterable[tuple[str, str]]) -> tuple[Action | None, str]:
    """The first (name, arguments) tool call naming an action tool, and its reason."""
    for name, arguments in calls:
        action = _TOOL_ACTIONS.get(name.strip())
        if action is not None:
            return action, _reason(arguments)
    return None, ""


def parse_completion(body: bytes) -> ModelReply:
    """A plain (non-streamed) chat completion response body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BackendProtocolError("LLM response is not valid JSON") from None
    found = _choice(data, "message")
    if found is None:
        raise BackendProtocolError("LLM response has no choices")
    message, finish = found
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise BackendProtocolError("LLM response tool_calls is not a list")
    pairs = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise BackendProtocolError("LLM response tool call has no function object")
        pairs.append(
            (
                _text_field(function.get("name"), "tool name"),
                _text_field(function.get("arguments"), "tool arguments"),
            )
        )
    action, reason = first_action(pairs)
    text = _text_field(message.get("content"), "content")
    return ModelReply(text, action, reason, finish if isinstance(finish, str) else None)


class StreamAccumulator:
    """Folds streamed chunks (decoded JSON) into one reply as they arrive."""

    __slots__ = ("_calls", "_text", "done", "finish_reason")

    def __init__(self) -> None:
        self._text: list[str] = []
        # Tool calls by index: name pieces and argument pieces.
        self._calls: dict[int, tuple[list[str], list[str]]] = {}
        self.finish_reason: str | None = None
        self.done = False  # `data: [DONE]` arrived

    @property
    def empty(self) -> bool:
        return not self._text and not self._calls

    def feed(self, chunk: object) -> None:
        found = _choice(chunk, "delta")
        if found is None:  # usage or filter-result chunks carry no choices
            return
        delta, finish = found
        if isinstance(finish, str):
            self.finish_reason = finish
        content = _text_field(delta.get("content"), "delta content")
        if content:
            self._text.append(content)
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise BackendProtocolError("LLM stream tool_calls is not a list")
        for position, call in enumerate(calls):
            # Servers that omit `index` send each call whole, in list order.
            index = call.get("index", position) if isinstance(call, dict) else None
            function = (call.get("function") or {}) if isinstance(call, dict) else None
            if not isinstance(index, int) or not isinstance(function, dict):
                raise BackendProtocolError("LLM stream tool call delta has the wrong shape")
            names, arguments = self._calls.setdefault(index, ([], []))
            names.append(_text_field(function.get("name"), "tool name"))
            arguments.append(_text_field(function.get("arguments"), "tool arguments"))

    def reply(self, complete: bool = True) -> ModelReply:
        calls = (("".join(n), "".join(a)) for _, (n, a) in sorted(self._calls.items()))
        action, reason = first_action(calls)
        return ModelReply("".join(self._text), action, reason, self.finish_reason, complete)

    def __repr__(self) -> str:
        chars = sum(map(len, self._text))
        return f"StreamAccumulator(chars={chars}, tool_calls={len(self._calls)}, done={self.done})"


def split_tags(text: str) -> tuple[str, Action | None]:
    """Remove `[[TRANSFER]]` / `[[HANGUP]]` tags: the text to speak and the first tag's action."""
    m = _TAG.search(text)
    if m is None:
        return text.strip(), None
    return _TAG.sub("", text).strip(), _TAG_ACTIONS[m.group(1).upper()]


def cut_at_sentence_end(text: str) -> str:
    """`text` up to its last sentence end, or "" when it has none."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends else ""


def spoken_reply(reply: ModelReply) -> tuple[str, Action | None]:
    """What the caller hears, and the action after it."""
    text, tag_action = split_tags(reply.text)
    if not reply.complete:
        # Time ran out: only whole sentences are spoken.
        text = cut_at_sentence_end(text)
    elif reply.finish_reason == "length":
        # max_tokens cut the model off: drop the broken sentence if a whole one precedes it.
        text = cut_at_sentence_end(text) or text
    return text, reply.action or tag_action


# -- the bot ------------------------------------------------------------------


class LlmBot:
    """An `AsyncBot` answering each turn with one chat completion."""

    def __init__(self, config: LlmConfig, client: HttpClient) -> None:
        self.name = config.name
        self.config = config
        self._client = client
        self._timeout = config.timeout_ms / 1000
        headers = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if config.stream else "application/json"),
        ]
        if config.api_key:
            headers.append(("authorization", f"Bearer {config.api_key}"))
        self._headers = tuple(headers)
        static: dict[str, Any] = {
            "model": config.model,
            "max_tokens": config.max_tokens,
            "stream": config.stream,
        }
        if config.temperature is not None:
            static["temperature"] = config.temperature
        if config.tools:
            static["tools"] = TOOLS
        self._static = static

    async def ask(self, query: BotQuery, context: BotContext, timeout: float) -> BotAnswer | None:
        budget = min(self._timeout, timeout)
        if budget <= 0:
            raise BackendTimeout(f"LLM bot {self.name!r}: no time left for the turn")
        cfg = self.config
        history = bound_history(load_history(query.bot_state), cfg.history_turns, cfg.history_chars)
        user = user_message(query)
        body = orjson.dumps({**self._static, "messages": self.messages(query, history, user)})
        if cfg.stream:
            reply = await self._streamed(body, budget)
        else:
            reply = await self._plain(body, budget)

        text, action = spoken_reply(reply)
        if not reply.complete:
            if not text and action is None:
                raise BackendTimeout(f"LLM bot {self.name!r}: no whole sentence in {budget:.3g}s")
            log.warning(
                "llm answer cut at its last sentence end: time ran out",
                extra={"fields": self._fields(context, spoken=len(text), received=len(reply.text))},
            )
        if not text and action is None:
            return None
        if action is not None:
            log.info(
                "llm asked for an action",
                extra={"fields": self._fields(context, action=action.value, reason=reply.reason)},
            )
        if text:
            history.append((user, text))
        state = dump_history(bound_history(history, cfg.history_turns, cfg.history_chars))
        if action is None:
            # A reply ending in a question asks the caller already: no asking-back after it.
            return BotAnswer(text, bot_state=state, expects_input=text.endswith(("?", "？")))
        params = cfg.transfer_action_params if action is Action.TRANSFER_TO_AGENT else "{}"
        return BotAnswer(text, action, params, interruptible=False, bot_state=state)

    def messages(
        self, query: BotQuery, history: Sequence[Exchange], user: str
    ) -> list[ChatMessage]:
        """The request's messages: system prompt, history, this turn."""
        messages: list[ChatMessage] = []
        system = self.config.system_prompt.render(query.variables)
        if system:
            messages.append({"role": "system", "content": system})
        for said, answered in history:
            messages.append({"role": "user", "content": said})
            messages.append({"role": "assistant", "content": answered})
        messages.append({"role": "user", "content": user})
        return messages

    async def _plain(self, body: bytes, budget: float) -> ModelReply:
        try:
            async with asyncio.timeout(budget):
                response = await self._client.request(
                    "POST",
                    self.config.url,
                    headers=self._headers,
                    body=body,
                    timeout=budget,
                    max_body=self.config.max_body,
                )
        except TimeoutError:
            raise BackendTimeout(f"LLM bot {self.name!r}: no answer in {budget:.3g}s") from None
        self._check(response.status)
        return parse_completion(response.body)

    async def _streamed(self, body: bytes, budget: float) -> ModelReply:
        budget -= min(STREAM_RESERVE, budget / 10)
        acc = StreamAccumulator()
        try:
            async with (
                asyncio.timeout(budget),
                self._client.stream(
                    "POST",
                    self.config.url,
                    headers=self._headers,
                    body=body,
                    timeout=budget,
                    max_body=self.config.max_body,
                ) as response,
            ):
                self._check(response.status)
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind == "application/json":
                    # The server ignored "stream": true and answered in one body.
                    return parse_completion(await self._read_all(response.chunks()))
                await self._read_events(response.chunks(), acc)
        except (TimeoutError, BackendTimeout) as exc:
            if acc.done:  # the answer is whole; only the body's end was late
                return acc.reply()
            if acc.empty:
                if isinstance(exc, BackendTimeout):
                    raise  # the client's own (pool or connect timeouts keep their kind)
                raise BackendTimeout(f"LLM bot {self.name!r}: no answer in {budget:.3g}s") from None
            return acc.reply(complete=False)
        # A body that ends without [DONE] still holds everything the server sent.
        return acc.reply()

    async def _read_events(self, chunks: AsyncIterator[bytes], acc: StreamAccumulator) -> None:
        buffer = b""
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > self.config.max_body:
                raise BackendBodyTooLarge(f"LLM stream longer than {self.config.max_body} bytes")
            events, buffer = split_events(buffer + chunk)
            for data in events:
                if acc.done:
                    continue  # nothing after [DONE] counts
                if data.strip() == b"[DONE]":
                    acc.done = True
                    continue
                try:
                    event = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise BackendProtocolError("LLM stream event is not valid JSON") from None
                acc.feed(event)

    async def _read_all(self, chunks: AsyncIterator[bytes]) -> bytes:
        parts: list[bytes] = []
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > self.config.max_body:
                raise BackendBodyTooLarge(f"LLM response longer than {self.config.max_body} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _check(self, status: int) -> None:
        if not 200 <= status < 300:
            raise BackendStatus(f"LLM bot {self.name!r}: HTTP {status}")

    def _fields(self, context: BotContext, **more: object) -> dict[str, object]:
        return {
            "bot": self.name,
            "instance_id": context.instance_id,
            "conversation_id": context.conversation_id,
            **more,
        }

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"LlmBot(name={self.name!r}, model={cfg.model!r}, "
            f"url={_public_url(cfg.url)!r}, stream={cfg.stream})"
        )

"""The webhook bot: a customer's bot over HTTP with JSON (docs/bots.md).

Rules of this file:
- One POST per question, with a JSON body and a timestamped HMAC-SHA256
  signature (gateway.net.signing), through the shared pooled client.
- The reply is validated strictly: anything but the documented shape is a
  `BackendProtocolError`; a non-2xx status is a `BackendStatus`. The
  dialogue service turns either into the instance's fallback.
- 204, or a 2xx whose answer is empty and names no action, means the bot did
  not understand: `None`, an unrecognized turn.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import errors
from gateway.dialogue.bot import BotAnswer, BotContext, BotQuery
from gateway.dialogue.config import ConfigProblem, Reader, parse_action_params
from gateway.dialogue.operations import ACTIONS, EMPTY_VARS, Action
from gateway.net import signing
from gateway.net.http import HttpClient

MAX_TEXT_CHARS = 2_000
MAX_VARIABLES = 64
MAX_STATE_CHARS = 4_096
EVENTS = {"utterance": "utterance", "digits": "digits", "intent": "intent"}


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    name: str
    url: str
    secret: str
    timeout_ms: int = 1500
    max_body: int = 65_536

    @classmethod
    def from_table(cls, data: Mapping[str, Any], where: str) -> WebhookConfig:
        r = Reader(data, where)
        url = r.text("url", max_len=2048)
        if not url.startswith(("http://", "https://")):
            raise ConfigProblem(r.key("url"), "must be an http:// or https:// URL")
        secret = r.text("secret", max_len=256)
        if len(secret) < 16:
            raise ConfigProblem(r.key("secret"), "must be at least 16 characters")
        return cls(
            name=r.text("name", max_len=64),
            url=url,
            secret=secret,
            timeout_ms=r.integer("timeout_ms", 10, 60_000, 1500),
            max_body=r.integer("max_body", 1_024, 16 * 1_048_576, 65_536),
        )

    def __repr__(self) -> str:
        return f"WebhookConfig(name={self.name!r}, url={self.url!r})"


class WebhookBot:
    def __init__(self, config: WebhookConfig, client: HttpClient) -> None:
        self.config = config
        self.name = config.name
        self.client = client
        self._secret = config.secret.encode()
        self._timeout = config.timeout_ms / 1000
        # Delivery ids: a per-process random prefix and a counter, unique
        # without a call to the random source per request.
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def request_body(self, query: BotQuery, context: BotContext) -> bytes:
        body: dict[str, Any] = {
            "conversation_id": context.conversation_id,
            "instance_id": context.instance_id,
            "event": query.kind,
            query.kind: query.text,
            "variables": query.variables,
            "turn": query.turn,
            "state": query.bot_state,
        }
        # Variables may be a read-only mapping (a mappingproxy): `default=dict`.
        return orjson.dumps(body, default=dict)

    async def ask(self, query: BotQuery, context: BotContext, timeout: float) -> BotAnswer | None:
        body = self.request_body(query, context)
        timestamp = str(int(time.time()))
        delivery = f"{self._prefix}-{next(self._counter)}"
        headers = (
            ("content-type", "application/json"),
            (signing.WEBHOOK_TIMESTAMP, timestamp),
            (signing.WEBHOOK_DELIVERY, delivery),
            (
                signing.WEBHOOK_SIGNATURE,
                signing.webhook_sign(self._secret, timestamp, delivery, body),
            ),
        )
        response = await self.client.request(
            "POST",
            self.config.url,
            headers=headers,
            body=body,
            timeout=min(timeout, self._timeout),
            max_body=self.config.max_body,
        )
        if response.status == 204:
            return None
        if not 200 <= response.status < 300:
            raise errors.BackendStatus(f"webhook bot {self.name!r} answered HTTP {response.status}")
        return parse_reply(response.body)

    def __repr__(self) -> str:
        return f"WebhookBot({self.name!r}, url={self.config.url!r})"


def _bad(why: str) -> errors.BackendProtocolError:
    return errors.BackendProtocolError(f"webhook reply {why}")


def _text(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"field {field} must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise _bad(f"field {field} is longer than {MAX_TEXT_CHARS} characters")
    return value


def _variables(value: object) -> Mapping[str, str]:
    if value is None:
        return EMPTY_VARS
    if not isinstance(value, dict) or len(value) > MAX_VARIABLES:
        raise _bad(f"field variables must be an object of at most {MAX_VARIABLES} keys")
    out: dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, str):
            out[k] = v
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, int | float):
            out[k] = str(v)
        else:
            raise _bad(f"variable {k!r} must be a string, number or boolean")
    return out


def parse_reply(raw: bytes) -> BotAnswer | None:
    """The bot's JSON reply as a BotAnswer (None: not understood).

    Only the fields present are checked, so the common reply (an answer and
    perhaps variables) costs a few lookups.
    """
    if not raw.strip():
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("is not valid JSON") from None
    if type(data) is not dict:
        raise _bad("must be a JSON object")
    text = data.get("answer")
    if text is None:
        text = data.get("text")
    if type(text) is not str:
        text = _text(text, "answer")
    elif len(text) > MAX_TEXT_CHARS:
        raise _bad(f"field answer is longer than {MAX_TEXT_CHARS} characters")
    if "action" in data:
        name = data["action"]
        if not isinstance(name, str) or name not in ACTIONS:
            raise _bad(f"field action must be one of {', '.join(ACTIONS)}")
        action = ACTIONS[name]
    elif not text:
        return None
    else:
        action = Action.BROADCAST
    if len(data) == 1:  # the common case: an answer and nothing else
        return BotAnswer(text, action)
    params = "{}"
    if "action_params" in data:
        try:
            params = parse_action_params(data["action_params"], "action_params")
        except ConfigProblem as exc:
            raise _bad(f"field {exc.key}: {exc.problem}") from None
    interruptible = data.get("interruptible", True)
    expects_input = data.get("expects_input", False)
    if type(interruptible) is not bool or type(expects_input) is not bool:
        raise _bad("fields interruptible and expects_input must be booleans")
    state = data.get("state")
    if state is not None and (type(state) is not str or len(state) > MAX_STATE_CHARS):
        raise _bad(f"field state must be a string of at most {MAX_STATE_CHARS} characters")
    variables = _variables(data["variables"]) if "variables" in data else EMPTY_VARS
    return BotAnswer(text, action, params, interruptible, variables, state, expects_input)

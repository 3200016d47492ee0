"""The generic JSON webhook route: `POST /v1/calls/{call_id}/events`.

Rules of this file:
- Bearer tokens from `[adapters.webhook] tokens`, compared in constant
  time; anything else is 401 before the body is read.
- The body is capped, parsed by the codec, and run through the same bridge
  (and the same idempotency) as every other front door: the turn key is
  `seq`, or the `Idempotency-Key` header.
- A `speech` event for a call another adapter owns (an Asterisk channel id)
  is handed to that call, which plays the reply on the channel.
- Answers are JSON: 200 with the action, or 4xx `{code, message}` for a
  request the codec refuses.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from adapters.webhook import codec
from gateway.asgi import Receive, Scope, Send, respond
from gateway.calls.events import UserSaid
from gateway.calls.mount import AdapterContext, Mounted
from gateway.dialogue.config import ConfigProblem, Reader
from gateway.dialogue.operations import Reply
from gateway.store.instances import Instance

FRONT = "webhook"
PREFIX = "/v1/calls/"
SUFFIX = "/events"
JSON = b"application/json"


class WebhookRoute:
    def __init__(
        self, context: AdapterContext, tokens: list[str], default_instance: str, max_body: int
    ) -> None:
        self.bridge = context.bridge
        self.live = context.live
        self.tokens = [f"Bearer {t}".encode() for t in tokens]
        self.default_instance = default_instance
        self.max_body = max_body
        context.metrics.bind_front(FRONT)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                # Every token is compared, so timing does not tell which matched.
                return sum(hmac.compare_digest(value, t) for t in self.tokens) > 0
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if not path.endswith(SUFFIX):
            await respond(send, 404, JSON, codec.render_error("NotFound", "no such route"))
            return
        if scope["method"] != "POST":
            await respond(send, 405, JSON, codec.render_error("MethodNotAllowed", "use POST"))
            return
        if not self._authorized(scope):
            await respond(send, 401, JSON, codec.render_error("Unauthorized", "bad token"))
            return
        call_id = path[len(PREFIX) : -len(SUFFIX)]
        try:
            body = await self._body(receive)
            parsed = codec.parse_event(call_id, body, self.default_instance)
        except codec.WireError as exc:
            status = 413 if exc.code == "PayloadTooLarge" else 400
            await respond(send, status, JSON, codec.render_error(exc.code, exc.message))
            return
        key: object = None
        if parsed.seq is not None:
            key = (call_id, parsed.seq)
        else:
            for name, value in scope["headers"]:
                if name == b"idempotency-key":
                    key = (call_id, value.decode("latin-1"))
        seq = parsed.seq

        def render(reply: Reply | None, instance: Instance | None) -> bytes:
            return codec.render(call_id, seq, reply)

        live = self.live.get(call_id) if isinstance(parsed.event, UserSaid) else None
        if live is not None:
            # A call another front door owns (an Asterisk channel): it runs
            # the turn in its own order and plays the reply itself.
            out = render(await live(parsed.event), None)
        else:
            out = await self.bridge.run(FRONT, parsed.event, parsed.instance_id, render, key, body)
        await respond(send, 200, JSON, out)

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise codec.WireError("PayloadTooLarge", f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def __repr__(self) -> str:
        return f"WebhookRoute(tokens={len(self.tokens)})"


def mount(context: AdapterContext, table: Mapping[str, Any], where: str) -> Mounted:
    r = Reader(table, where)
    tokens = table.get("tokens", [])
    if (
        not isinstance(tokens, list)
        or not tokens
        or not all(isinstance(t, str) and len(t) >= 16 for t in tokens)
    ):
        raise ConfigProblem(r.key("tokens"), "must list bearer tokens of at least 16 characters")
    route = WebhookRoute(
        context,
        tokens,
        r.text("default_instance", "", max_len=128),
        r.integer("max_body_bytes", 1_024, 1_048_576, 65_536),
    )
    return Mounted({}, {PREFIX: route})

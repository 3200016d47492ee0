"""The websocket client front door: `/ws`, JSON text frames under `ivrgw.v1`.

Rules of this file (docs/websocket.md):
- The upgrade is checked before it is accepted (gateway.api.upgrade): a
  bearer token from `[adapters.websocket] tokens`, or a query signed by an
  access key whose policy may run dialogues. Anything else is 401 (403 for a
  read-only key), before the upgrade.
- A client that offers subprotocols must offer `ivrgw.v1` (400 otherwise);
  one that offers none is accepted without one.
- Each socket is a `Session` (session.py); calls outlive sockets in `Calls`
  (calls.py) for `grace_seconds`. Shutdown ends every call left.
- The endpoint's gauges and counters are read at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.websocket.calls import FRONT, Calls
from adapters.websocket.codec import SUBPROTOCOL
from adapters.websocket.session import Limits, Session, Stats
from gateway import errors
from gateway.api import upgrade
from gateway.api.auth import Authenticator
from gateway.asgi import Receive, Scope, Send, refuse_websocket
from gateway.calls.mount import AdapterContext, Mounted
from gateway.dialogue.config import ConfigProblem, Reader

log = logging.getLogger("adapters.websocket")

# The close codes a socket ends with, as `ivrgw_websocket_disconnects{reason}`.
REASONS = {1000: "closed", 1001: "closed", 1006: "dropped", 1012: "shutdown"}
KNOWN_REASONS = ("closed", "dropped", "shutdown", "slow_reader", "binary_frame")


@dataclass(frozen=True, slots=True)
class WebsocketConfig:
    path: str
    tokens: tuple[str, ...]
    grace_seconds: float
    limits: Limits

    def __repr__(self) -> str:
        return f"WebsocketConfig(path={self.path!r}, tokens={len(self.tokens)})"


def _number(r: Reader, name: str, low: float, high: float, default: float) -> float:
    value = r.data.get(name, default)
    if type(value) not in (int, float) or not low <= value <= high:
        raise ConfigProblem(r.key(name), f"must be a number from {low:g} to {high:g}")
    return float(value)


def parse_config(table: Mapping[str, Any], where: str) -> WebsocketConfig:
    r = Reader(table, where)
    path = r.text("path", "/ws", max_len=200)
    if not path.startswith("/"):
        raise ConfigProblem(r.key("path"), "must start with /")
    tokens = table.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) and len(t) >= 16 for t in tokens):
        raise ConfigProblem(r.key("tokens"), "must list bearer tokens of at least 16 characters")
    rate = _number(r, "rate", 1, 1_000_000, 1_000)
    limits = Limits(
        default_instance=r.text("default_instance", "", max_len=128),
        max_frame_bytes=r.integer("max_frame_bytes", 1_024, 1_048_576, 16_384),
        send_queue=r.integer("send_queue", 1, 1_000_000, 256),
        rate=rate,
        burst=_number(r, "burst", 1, 10_000_000, 2 * rate),
        max_calls=r.integer("max_calls", 1, 1_000_000, 10_000),
        send_timeout=_number(r, "send_timeout_seconds", 0.1, 60, 5),
    )
    return WebsocketConfig(path, tuple(tokens), _number(r, "grace_seconds", 0, 3_600, 30), limits)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"Code": code, "Message": message})
    await refuse_websocket(send, status, b"application/json", body)


class WebsocketRoute:
    def __init__(self, context: AdapterContext, config: WebsocketConfig) -> None:
        self.config = config
        self.auth: Authenticator | None = context.auth
        self.tokens = upgrade.bearer_tokens(config.tokens)
        self.calls = Calls(context.bridge, config.grace_seconds)
        self.limits = config.limits
        self.stats = Stats()
        self.sessions: set[Session] = set()
        context.metrics.bind_front(FRONT)
        context.metrics.registry.register(WebsocketCollector(self))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        try:
            caller = upgrade.check(scope, self.auth, self.tokens)
            if caller.key is not None and self.auth is not None:
                # A read-only key may watch (/ws/monitor), not run calls.
                self.auth.authorize(caller.key, "BeginDialogue")
        except errors.GatewayError as exc:
            await _refuse(send, 403 if exc.status == 403 else 401, exc.code, exc.message)
            return
        offered = scope.get("subprotocols") or ()
        if offered and SUBPROTOCOL not in offered:
            message = f"Offer the subprotocol {SUBPROTOCOL} (or none)."
            await _refuse(send, 400, "UnsupportedSubprotocol", message)
            return
        if self.calls.closed:
            await _refuse(send, 503, "ServiceUnavailable", "The gateway is shutting down.")
            return
        if await receive() != {"type": "websocket.connect"}:
            return
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL if offered else None})
        await self._serve(Session(self.calls, send, self.limits, self.stats), receive, caller)

    async def _serve(self, session: Session, receive: Receive, caller: upgrade.Caller) -> None:
        self.sessions.add(session)
        writer = asyncio.get_running_loop().create_task(session.write())
        code = 1006
        try:
            code = await session.read(receive)
        except asyncio.CancelledError:
            # Our own abort of a client that took nothing (no transport to abort).
            if not session.aborted or session.task is None:
                raise
            session.task.uncancel()
        finally:
            session.finish()
            writer.cancel()
            self.sessions.discard(session)
            kept = self.calls.detach(session)
            why = session.why
            if not why:
                # The gateway's own closes are counted when decided (Session.kick).
                why = REASONS.get(code, "closed")
                self.stats.count_disconnect(why)
            log.info(
                "websocket closed",
                extra={
                    "fields": {
                        "reason": why,
                        "code": code,
                        "calls_kept": kept,
                        "by": caller.key.id if caller.key else caller.how,
                    }
                },
            )

    def __repr__(self) -> str:
        return f"WebsocketRoute({self.config!r}, sockets={len(self.sessions)}, {self.calls!r})"


class WebsocketCollector(Collector):
    """The endpoint's gauges and counters, read at scrape time."""

    def __init__(self, route: WebsocketRoute) -> None:
        self._route = route

    def collect(self) -> Iterator[Metric]:
        route = self._route
        stats = route.stats
        sessions = list(route.sessions)
        yield GaugeMetricFamily(
            "ivrgw_websocket_connections", "Open client websockets.", value=len(sessions)
        )
        yield GaugeMetricFamily(
            "ivrgw_websocket_queued_frames",
            "Frames waiting in client websockets' send queues.",
            value=sum(s.queued for s in sessions),
        )
        calls = GaugeMetricFamily(
            "ivrgw_websocket_calls",
            "Live websocket calls: attached to a socket, or detached in their grace period.",
            labels=("state",),
        )
        detached = sum(1 for c in route.calls.live.values() if c.owner is None)
        calls.add_metric(["attached"], len(route.calls.live) - detached)
        calls.add_metric(["detached"], detached)
        yield calls
        disconnects = CounterMetricFamily(
            "ivrgw_websocket_disconnects",
            "Client websockets closed, by reason.",
            labels=("reason",),
        )
        for reason in sorted({*KNOWN_REASONS, *stats.disconnects}):
            disconnects.add_metric([reason], stats.disconnects.get(reason, 0))
        yield disconnects
        yield CounterMetricFamily(
            "ivrgw_websocket_grace_expiries",
            "Websocket calls ended with EndDialogue because no socket resumed them in time.",
            value=route.calls.expired,
        )
        yield CounterMetricFamily(
            "ivrgw_websocket_rate_limited_frames",
            "Client frames refused by a socket's rate limit.",
            value=stats.rate_limited,
        )
        errors_ = CounterMetricFamily(
            "ivrgw_websocket_error_frames", "Error frames sent, by code.", labels=("code",)
        )
        for code, n in sorted(stats.errors.items()):
            errors_.add_metric([code], n)
        yield errors_

    def __repr__(self) -> str:
        return f"WebsocketCollector({self._route!r})"


def mount(context: AdapterContext, table: Mapping[str, Any], where: str) -> Mounted:
    config = parse_config(table, where)
    if context.auth is None and not config.tokens:
        log.warning(
            "the websocket endpoint is open: [auth] is off and it has no tokens",
            extra={"fields": {"path": config.path}},
        )
    route = WebsocketRoute(context, config)
    return Mounted({}, websockets={config.path: route}, shutdown=[route.calls.close])

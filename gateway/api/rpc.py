"""The VoiceNavigator 2018-06-12 RPC API at `/`, as a plain ASGI callable.

Rules of this file:
- Parameters come from the query string and, for a form-encoded POST, the
  body; the action from `Action` or the `x-acs-action` header (the current
  SDK), the version from `Version` or `x-acs-version`.
- Order of checks: body size, Format, signature and freshness, policy,
  Version, Action, then the action's parameters. A rejected request never
  reaches the dialogue service, so it changes nothing.
- Every response, errors included, carries a RequestId. An error is
  `{RequestId, HostId, Code, Message}` with the code's HTTP status.
- The turn path holds no Starlette objects: one parse, one service call, one
  `orjson.dumps`, one histogram observe.
- A dialogue turn is idempotent by its signature nonce: the same signed
  request sent again (a client or proxy retry) is answered with the first
  reply, not run twice and not refused as a replay (calls.idempotency).
  Unsigned requests get the same with a `SignatureNonce` parameter.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from gateway import errors
from gateway.api import formats, query
from gateway.api.actions import DIALOGUE_ACTIONS, MAX_ID_CHARS, required
from gateway.api.auth import AccessKey, Authenticator
from gateway.api.manage import Handler, Request
from gateway.asgi import Receive, Scope, Send, respond
from gateway.calls.idempotency import KeyReused, TurnCache
from gateway.calls.monitor import Monitor
from gateway.dialogue.navigator import Done
from gateway.dialogue.operations import Operation
from gateway.metrics import OPERATIONS, Metrics
from gateway.store.recorder import Recorder

log = logging.getLogger("gateway.rpc")

API_VERSION = "2018-06-12"
HOST_ID = "ivr-gateway"
MAX_BODY_BYTES = 65_536  # the default of limits.max_body_bytes


# A dialogue service runs one operation: the navigator's step, or None for
# EndDialogue, which has no reply.
Service = Callable[[str, str, Operation, bool], Awaitable[Done | None]]
# The same, answering at once when it can: a step, None, or an awaitable of them.
SyncService = Callable[[str, str, Operation, bool], Done | Awaitable[Done | None] | None]

# A Host header fit to put in a link: a name or address and an optional port.
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?")

# Headers the API reads when the request is not ACS3-signed.
_USED_HEADERS = {
    name.encode(): name
    for name in (
        "content-type",
        "content-length",
        "transfer-encoding",
        "x-acs-action",
        "x-acs-version",
        "host",
    )
}


# -- the ASGI callable ----------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    """The headers the API needs, as str. ASGI gives names in lower case.

    An ACS3 request may sign any header, so then all of them are decoded;
    otherwise only the handful the API reads.
    """
    used: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = _USED_HEADERS.get(key)
        if name is not None:
            used[name] = value.decode("latin-1")
        elif key == b"authorization":
            break
    else:
        return used
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        n = name.decode("latin-1")
        v = value.decode("latin-1")
        # Repeated headers are joined, sorted, as the ACS3 canonical form wants.
        out[n] = ",".join(sorted((out[n], v))) if n in out else v
    return out


class RpcApi:
    """Serves the dialogue actions of the RPC API."""

    front = "rpc"

    def __init__(
        self,
        service: Service,
        authenticator: Authenticator | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        max_body: int = MAX_BODY_BYTES,
        service_sync: SyncService | None = None,
        turns: TurnCache | None = None,
        management: Mapping[str, Handler] | None = None,
        monitor: Monitor | None = None,
        public_url: str = "",
        recorder: Recorder | None = None,
    ) -> None:
        # Conversation records (gateway.store.recorder); None: not recorded.
        self.recorder = recorder
        self.service = service
        self.public_url = public_url.rstrip("/")
        self.monitor = Monitor() if monitor is None else monitor
        # A service that answers without I/O (the local navigator) also gives
        # its synchronous entry point: then nothing on the turn path is awaited.
        self.service_sync = service_sync
        self.auth = authenticator
        self.metrics = metrics
        self.clock = clock
        self.max_body = max_body
        self.request_ids = formats.RequestIds()
        self.turns = turns if turns is not None else TurnCache()
        self.management = dict(management or {})
        # The log level is set once at start-up (gateway.logs.configure).
        self.log_turns = log.isEnabledFor(logging.DEBUG)
        metrics.bind_front(self.front)
        # The series a successful turn lands in, by operation, bound once.
        self._ok = {op: metrics.series(op, self.front, "ok") for op in OPERATIONS}
        self._fallback = {op: metrics.series(op, self.front, "fallback") for op in OPERATIONS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = self.request_ids.next()
        fmt: formats.Format = "JSON"
        operation = instance_id = conversation_id = ""
        try:
            if scope["method"] not in ("GET", "POST"):
                raise errors.InvalidParameter(
                    f"HTTP method {scope['method']} is not supported; use GET or POST.",
                    code="UnsupportedHTTPMethod",
                )
            headers = _headers(scope)
            # No Content-Length and no Transfer-Encoding: no body to wait for.
            body = (
                await self._body(receive, headers)
                if "content-length" in headers or "transfer-encoding" in headers
                else b""
            )
            params = query.parse(scope["query_string"], "query string")
            form = body and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            )
            if form:
                params.update(query.parse(body, "form body"))

            f = params.get("Format", "JSON").upper()
            if f not in ("JSON", "XML"):
                raise errors.InvalidParameter.named("Format", "must be JSON or XML")
            fmt = f  # type: ignore[assignment]

            action = params.get("Action") or headers.get("x-acs-action", "")
            # The turn's idempotency key and the request's fingerprint.
            turn_key: str | None = None
            fingerprint: object = None
            replayed: errors.NonceUsed | None = None
            key: AccessKey | None = None
            if self.auth is not None:
                now = self.clock()
                acs3 = "authorization" in headers
                try:
                    if acs3:
                        # ACS3 signs the query string only; the body goes in by its hash.
                        url_query = [
                            (p[0], p[1]) for p in query.pairs(scope["query_string"], "query")
                        ]
                        key = self.auth.verify_acs3(
                            scope["method"], scope["path"], url_query, headers, body, now
                        )
                    else:
                        key = self.auth.verify_rpc_v1(
                            scope["method"],
                            params,
                            now,
                            self._canonical(scope, body if form else b""),
                        )
                    nonce = headers["x-acs-signature-nonce"] if acs3 else params["SignatureNonce"]
                    turn_key = f"{key.id}\x00{nonce}"
                except errors.NonceUsed as exc:
                    # Signed correctly, nonce seen before: a retry of a turn
                    # is answered below, anything else refused.
                    replayed = exc
                    key = self.auth.keys[exc.key_id]
                    turn_key = f"{exc.key_id}\x00{exc.nonce}"
                fingerprint = headers["authorization"] if acs3 else params["Signature"]
                if not action:
                    raise errors.MissingParameter("Action")
                self.auth.authorize(key, action)
            elif not action:
                raise errors.MissingParameter("Action")
            else:
                plain = params.get("SignatureNonce") or headers.get("x-acs-signature-nonce")
                if plain:
                    turn_key = f"\x00{plain}"
                    fingerprint = (scope["query_string"], body)

            version = params.get("Version") or headers.get("x-acs-version")
            if not version:
                raise errors.MissingParameter("Version")
            if version != API_VERSION:
                raise errors.InvalidVersion()

            spec = DIALOGUE_ACTIONS.get(action)
            if spec is None:
                handler = self.management.get(action)
                if handler is None:
                    raise errors.InvalidAction()
                if replayed is not None:
                    raise replayed
                answer = handler(params, Request(key, self._base_url(scope, headers)))
                fields = answer if isinstance(answer, dict) else await answer
                log.info("managed", extra={"fields": {"request_id": request_id, "action": action}})
                content_type, payload = formats.render(
                    fmt, action, {"RequestId": request_id, **fields}
                )
                await respond(send, 200, content_type, payload)
                return
            operation = spec.operation
            instance_id = required(params, "InstanceId", MAX_ID_CHARS)
            conversation_id = required(params, "ConversationId", MAX_ID_CHARS)
            op = spec.build(params)
            fresh = True  # False: a retried turn answered from the turn cache
            if turn_key is None:
                result = await self._run(instance_id, conversation_id, op, spec.debug)
            else:
                try:
                    entry, first = self.turns.claim(turn_key, fingerprint)
                except KeyReused:
                    raise replayed or errors.NonceUsed() from None
                if not first:
                    fresh = False
                    result = await entry.wait()
                elif replayed is not None:
                    # The nonce's first use never reached a turn (it was
                    # refused): this and any later copy are refused too.
                    entry.settle(replayed)
                    raise replayed
                else:
                    try:
                        result = await self._run(instance_id, conversation_id, op, spec.debug)
                    except errors.GatewayError as exc:
                        entry.settle(exc)
                        raise
                    except BaseException:
                        entry.settle(errors.InternalServerError())
                        raise
                    entry.settle(result)
        except errors.GatewayError as exc:
            await self._error(send, fmt, request_id, exc, operation, started)
            if operation and self.monitor.watchers:
                self._publish(instance_id, conversation_id, operation, None, "error", started)
            return
        except Exception:
            log.exception("rpc handler failed", extra={"fields": {"request_id": request_id}})
            await self._error(
                send, fmt, request_id, errors.InternalServerError(), operation, started
            )
            if operation and self.monitor.watchers:
                self._publish(instance_id, conversation_id, operation, None, "error", started)
            return

        reply = None if result is None else result.reply
        if self.recorder is not None and fresh:
            self.recorder.turn(
                self.front,
                instance_id,
                conversation_id,
                op,
                reply,
                "" if result is None else result.outcome,
                spec.debug,
            )
        if reply is None:
            out: dict[str, Any] = {"RequestId": request_id}
        else:
            out = {
                "RequestId": request_id,
                "TextResponse": reply.text,
                "Interruptible": reply.interruptible,
                "Action": reply.action.value,
                "ActionParams": reply.action_params,
            }
            self.metrics.count_reply(reply.action)
        content_type, payload = formats.render(fmt, action, out)
        elapsed = time.perf_counter() - started
        if result is not None and result.outcome == "fallback":
            self._fallback[operation].observe(elapsed)
        else:
            self._ok[operation].observe(elapsed)
        if self.monitor.watchers:
            self._publish(
                instance_id,
                conversation_id,
                operation,
                reply.action.value if reply else None,
                "fallback" if result is not None and result.outcome == "fallback" else "ok",
                started,
            )
        if self.log_turns:
            log.debug(
                "turn",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "front": self.front,
                        "instance": instance_id,
                        "conversation": conversation_id,
                        "operation": operation,
                        "debug": spec.debug,
                        "outcome": None if result is None else result.outcome,
                        "action": reply.action.value if reply else None,
                        "seconds": round(elapsed, 6),
                    }
                },
            )
        await respond(send, 200, content_type, payload)

    async def _run(
        self, instance_id: str, conversation_id: str, op: Operation, debug: bool
    ) -> Done | None:
        if self.service_sync is None:
            return await self.service(instance_id, conversation_id, op, debug)
        result = self.service_sync(instance_id, conversation_id, op, debug)
        if result is None or type(result) is Done:
            return result
        return await cast(Awaitable[Done | None], result)

    def _base_url(self, scope: Scope, headers: Mapping[str, str]) -> str:
        """Where the caller reached the gateway: `[server] public_url`, else
        the Host header when it is a plain host[:port], else the socket's address."""
        if self.public_url:
            return self.public_url
        host = headers.get("host", "")
        if not _HOST.fullmatch(host):
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"

    @staticmethod
    def _canonical(scope: Scope, form: bytes) -> str:
        """The sorted canonical query of the signed parameters (query and form).

        Taken from the wire as it is when the wire text is canonical (the
        core SDK's case); otherwise every decoded pair is encoded again.
        """
        raw = scope["query_string"]
        fast = None if form else query.canonical_from_wire(raw, exclude="Signature")
        if fast is not None:
            return fast
        pairs = query.pairs(raw, "query string")
        if form:
            pairs += query.pairs(form, "form body")
        return query.canonical(pairs, exclude="Signature")

    async def _body(self, receive: Receive, headers: Mapping[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise errors.InvalidParameter(f"The request body exceeds {self.max_body} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise errors.InvalidParameter(f"The request body exceeds {self.max_body} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _publish(
        self,
        instance_id: str,
        conversation_id: str,
        operation: str,
        action: str | None,
        outcome: str,
        started: float,
    ) -> None:
        elapsed = time.perf_counter() - started
        self.monitor.publish(
            self.front, instance_id, conversation_id, operation, action, outcome, elapsed
        )

    async def _error(
        self,
        send: Send,
        fmt: formats.Format,
        request_id: str,
        exc: errors.GatewayError,
        operation: str,
        started: float,
    ) -> None:
        self.metrics.count_error(exc.code)
        if operation:
            self.metrics.observe_turn(operation, self.front, "error", time.perf_counter() - started)
        body = {
            "RequestId": request_id,
            "HostId": HOST_ID,
            "Code": exc.code,
            "Message": exc.message,
        }
        log.info(
            "rejected",
            extra={"fields": {"request_id": request_id, "code": exc.code, "status": exc.status}},
        )
        content_type, payload = formats.render_error(fmt, body)
        await respond(send, exc.status, content_type, payload)

    def __repr__(self) -> str:
        return f"RpcApi(auth={self.auth is not None}, max_body={self.max_body})"

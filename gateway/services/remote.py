"""The remote navigator: every operation sent to a VoiceNavigator-compatible endpoint.

The endpoint is another gateway or Alibaba Cloud's own service. Requests are
signed with RPC v1 (a signed GET, as the core SDK sends) or ACS3 (a POST with
the signature in headers, as the current SDK sends), as configured.

Rules of this file:
- The remote's client errors (unknown instance or conversation, a duplicate
  begin, the concurrency limit, bad parameters) are the caller's errors and
  are raised as ours, with the same code and status.
- Anything else (a timeout, a reset, a 5xx, an auth failure at the remote,
  a body that is not the documented shape, an open breaker) is the remote's
  failure: the caller gets the instance's fallback, and the breaker counts it.
- A request is retried once, with the same signed bytes, only when it failed
  before any byte was sent (connect error, no free connection) and budget is
  left. The remote treats a repeated nonce as a retry of the same turn.
- EndDialogue goes through the durable outbox and is delivered at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from gateway import errors
from gateway.dialogue import navigator
from gateway.dialogue.config import ConfigProblem, Reader
from gateway.dialogue.navigator import DialogueState, Done
from gateway.dialogue.operations import (
    ACTIONS,
    EMPTY_VARS,
    Action,
    BeginDialogue,
    CollectedNumber,
    Dialogue,
    EndDialogue,
    Operation,
    Reply,
    SilenceTimeout,
)
from gateway.net import signing
from gateway.net.breaker import Breaker
from gateway.net.http import HttpClient, Response
from gateway.store.instances import Instance
from gateway.store.outbox import Outbox

log = logging.getLogger("gateway.remote")

API_VERSION = "2018-06-12"
SignatureKind = Literal["rpc-v1", "acs3", "none"]
_STATE = DialogueState()

# The remote's codes that are the caller's errors, raised as ours.
_CLIENT_ERRORS: Mapping[str, type[errors.GatewayError]] = {
    "InvalidInstanceId.NotFound": errors.InstanceNotFound,
    "InvalidInstanceId.Disabled": errors.InstanceDisabled,
    "InvalidConversationId.NotFound": errors.ConversationNotFound,
    "InvalidConversationId.Duplicated": errors.ConversationDuplicated,
    "InvalidConcurrency.LimitExceeded": errors.ConcurrencyLimitExceeded,
}


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    name: str
    url: str
    signature: SignatureKind
    access_key_id: str = ""
    access_key_secret: str = ""
    timeout_ms: int = 1500

    @classmethod
    def from_table(cls, data: Mapping[str, Any], where: str) -> RemoteConfig:
        r = Reader(data, where)
        url = r.text("url", max_len=2048)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigProblem(r.key("url"), "must be an http:// or https:// URL")
        kind = r.text("signature", "rpc-v1", max_len=16)
        if kind not in ("rpc-v1", "acs3", "none"):
            raise ConfigProblem(r.key("signature"), "must be rpc-v1, acs3 or none")
        key_id = r.text("access_key_id", "", max_len=128)
        secret = r.text("access_key_secret", "", max_len=256)
        if kind != "none" and not (key_id and secret):
            raise ConfigProblem(
                where, f"signature {kind} needs access_key_id and access_key_secret"
            )
        return cls(
            name=r.text("name", max_len=64),
            url=url,
            signature=kind,  # type: ignore[arg-type]
            access_key_id=key_id,
            access_key_secret=secret,
            timeout_ms=r.integer("timeout_ms", 10, 60_000, 1500),
        )

    def __repr__(self) -> str:
        return f"RemoteConfig(name={self.name!r}, url={self.url!r}, signature={self.signature})"


def _context(variables: Mapping[str, str]) -> str:
    return orjson.dumps(dict(variables)).decode() if variables else ""


def operation_params(op: Operation, debug: bool) -> tuple[str, dict[str, str]]:
    """The action name and business parameters of one operation."""
    prefix = "Debug" if debug else ""
    if isinstance(op, Dialogue):
        p = {"Utterance": op.utterance}
        if op.variables:
            p["AdditionalContext"] = _context(op.variables)
        return prefix + "Dialogue", p
    if isinstance(op, CollectedNumber):
        return prefix + "CollectedNumber", {"Number": op.number}
    if isinstance(op, SilenceTimeout):
        return "SilenceTimeout", {"InitialContext": _context(op.variables)} if op.variables else {}
    if isinstance(op, BeginDialogue):
        p = {"CallingNumber": op.calling_number}
        if op.called_number:
            p["CalledNumber"] = op.called_number
        if op.variables:
            p["InitialContext"] = _context(op.variables)
        return prefix + "BeginDialogue", p
    return "EndDialogue", {}


class RemoteDialogueService:
    def __init__(
        self,
        config: RemoteConfig,
        client: HttpClient,
        outbox: Outbox | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.client = client
        self.outbox = outbox
        self.breaker = breaker or Breaker(f"remote:{config.name}")
        parts = urlsplit(config.url)
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path or "/"
        self._host = parts.netloc
        if outbox is not None:
            outbox.register(self._outbox_target, self._deliver_end)

    @property
    def _outbox_target(self) -> str:
        return f"remote:{self.name}"

    # -- signing --------------------------------------------------------------

    def build(self, action: str, params: Mapping[str, str]) -> tuple[str, str, dict[str, str]]:
        """The method, URL and headers of one signed request (empty body)."""
        cfg = self.config
        if cfg.signature == "acs3":
            query = sorted(params.items())
            headers = {
                "host": self._host,
                "x-acs-action": action,
                "x-acs-version": API_VERSION,
                "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "x-acs-signature-nonce": uuid.uuid4().hex,
            }
            signing.sign_acs3_headers(
                cfg.access_key_id, cfg.access_key_secret, "POST", self._path, query, headers, b""
            )
            del headers["host"]  # the client sends Host itself, with the same value
            return "POST", self._url(query), headers
        full = {"Action": action, "Version": API_VERSION, "Format": "JSON", **params}
        if cfg.signature == "rpc-v1":
            full.update(
                AccessKeyId=cfg.access_key_id,
                SignatureMethod="HMAC-SHA1",
                SignatureVersion="1.0",
                SignatureNonce=uuid.uuid4().hex,
                Timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            full["Signature"] = signing.rpc_v1_signature(cfg.access_key_secret, "GET", full)
        return "GET", self._url(sorted(full.items())), {}

    def _url(self, pairs: list[tuple[str, str]]) -> str:
        query = "&".join(
            f"{signing.percent_encode(k)}={signing.percent_encode(v)}" for k, v in pairs
        )
        return f"{self._base}{self._path}?{query}"

    # -- one exchange ---------------------------------------------------------

    async def call(
        self,
        instance: Instance,
        conversation_id: str,
        action: str,
        params: Mapping[str, str],
        timeout: float,
    ) -> dict[str, Any]:
        """Send one action; the remote's JSON answer, or an error raised as ours."""
        business = {
            "InstanceId": instance.remote_instance_id or instance.instance_id,
            "ConversationId": conversation_id,
            **params,
        }
        method, url, headers = self.build(action, business)
        deadline = time.monotonic() + timeout
        try:
            response = await self.client.request(
                method, url, headers=tuple(headers.items()), timeout=timeout
            )
        except errors.BackendError as exc:
            left = deadline - time.monotonic()
            if not exc.retry_safe or left <= 0:
                raise
            response = await self.client.request(
                method, url, headers=tuple(headers.items()), timeout=left
            )
        return self._parse(response)

    def _parse(self, response: Response) -> dict[str, Any]:
        try:
            data = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise errors.BackendProtocolError(
                f"remote {self.name!r} answered HTTP {response.status} with a body that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise errors.BackendProtocolError(f"remote {self.name!r} answered a non-object")
        if response.status == 200:
            return data
        code = data.get("Code")
        message = data.get("Message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise errors.BackendStatus(f"remote {self.name!r} answered HTTP {response.status}")
        known = _CLIENT_ERRORS.get(code)
        if known is not None:
            raise known(message)
        if 400 <= response.status < 500 and (
            code.startswith(("Invalid", "Missing"))
            and not code.startswith("InvalidAccessKey")
            and not code.startswith("InvalidTimeStamp")
        ):
            # A parameter the remote refuses is the caller's: pass it on.
            raise errors.InvalidParameter(message, code=code)
        raise errors.BackendStatus(f"remote {self.name!r} answered HTTP {response.status} {code}")

    @staticmethod
    def _reply(data: Mapping[str, Any], instance: Instance) -> Reply:
        text = data.get("TextResponse")
        action = ACTIONS.get(data.get("Action", ""))
        interruptible = data.get("Interruptible")
        params = data.get("ActionParams", "{}")
        if (
            not isinstance(text, str)
            or action is None
            or not isinstance(interruptible, bool)
            or not isinstance(params, str)
        ):
            raise errors.BackendProtocolError("remote reply is not the documented shape")
        cfg = instance.navigation
        wait = cfg.silence_timeout.timeout if action is Action.BROADCAST else 0
        return Reply(text, action, interruptible, params or "{}", wait)

    # -- the service ----------------------------------------------------------

    async def run(
        self, instance: Instance, conversation_id: str, op: Operation, debug: bool
    ) -> Done | None:
        action, params = operation_params(op, debug)
        if isinstance(op, EndDialogue):
            await self._end(instance, conversation_id)
            return None
        cfg = instance.navigation
        variables = getattr(op, "variables", EMPTY_VARS)
        if not self.breaker.allow():
            return Done(navigator.fallback_reply(cfg, variables), _STATE, "fallback")
        budget = min(cfg.fallback.turn_budget_ms, self.config.timeout_ms) / 1000
        why = ""
        try:
            async with asyncio.timeout(budget):
                data = await self.call(instance, conversation_id, action, params, budget)
            reply = self._reply(data, instance)
        except errors.BackendError as exc:
            why = exc.kind
        except TimeoutError:
            why = "timeout"
        except errors.GatewayError:
            # The remote answered, and the caller's request was at fault.
            self.breaker.success()
            raise
        else:
            self.breaker.success()
            return Done(reply, _STATE, "answer")
        self.breaker.failure()
        log.warning(
            "remote fallback",
            extra={"fields": {"remote": self.name, "instance": instance.instance_id, "why": why}},
        )
        return Done(navigator.fallback_reply(cfg, variables), _STATE, "fallback")

    async def _end(self, instance: Instance, conversation_id: str) -> None:
        payload = {
            "instance": instance.remote_instance_id or instance.instance_id,
            "conversation": conversation_id,
        }
        if self.outbox is None:
            await self._deliver_end(payload)
        else:
            await self.outbox.put(self._outbox_target, payload)

    async def _deliver_end(self, payload: Mapping[str, Any]) -> None:
        """One delivery attempt of an EndDialogue (the outbox retries on BackendError)."""
        params = {"InstanceId": payload["instance"], "ConversationId": payload["conversation"]}
        method, url, headers = self.build("EndDialogue", params)
        timeout = self.config.timeout_ms / 1000
        response = await self.client.request(
            method, url, headers=tuple(headers.items()), timeout=timeout
        )
        try:
            self._parse(response)
        except (errors.ConversationNotFound, errors.InstanceNotFound):
            # Already ended (or expired) at the remote: nothing left to deliver.
            return
        except errors.BackendError:
            raise
        except errors.GatewayError as exc:
            log.warning(
                "remote refused EndDialogue",
                extra={"fields": {"remote": self.name, "code": exc.code}},
            )

    def __repr__(self) -> str:
        return f"RemoteDialogueService({self.config!r}, {self.breaker!r})"

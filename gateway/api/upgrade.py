"""Who may open a websocket: checked on the upgrade request, before it is accepted.

Two ways in, tried in this order:
1. `Authorization: Bearer <token>`, compared in constant time with every
   configured token of the endpoint (so timing does not tell which matched);
2. a signed query (`AccessKeyId`, `Timestamp`, `SignatureNonce`, `Signature`,
   see `gateway.net.signing.handshake_string_to_sign`) by a configured access
   key, with the RPC API's window and single-use nonces.

With the RPC API's auth switched off (`[auth] enabled = false`) and no
tokens configured, the endpoint is as open as the RPC API is.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from gateway import errors
from gateway.api.auth import AccessKey, Authenticator
from gateway.asgi import Scope, Send, query_params, refuse_websocket


class Caller(NamedTuple):
    # "token", "key" or "open"; the access key when signed.
    how: str
    key: AccessKey | None


def bearer_tokens(tokens: Sequence[str]) -> list[bytes]:
    return [f"Bearer {t}".encode() for t in tokens]


def check(
    scope: Scope,
    auth: Authenticator | None,
    tokens: Sequence[bytes] = (),
    now: float | None = None,
) -> Caller:
    """The caller, or an `errors.AuthError` naming what is wrong."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value.startswith(b"Bearer "):
            if tokens and sum(hmac.compare_digest(value, t) for t in tokens) > 0:
                return Caller("token", None)
            raise errors.InvalidToken()
    params = query_params(scope)
    if "Signature" in params or "AccessKeyId" in params:
        if auth is None:
            raise errors.IncompleteSignature("Signed handshakes need [auth] access keys.")
        key = auth.verify_handshake(scope["path"], params, time.time() if now is None else now)
        return Caller("key", key)
    if auth is None and not tokens:
        return Caller("open", None)
    raise errors.IncompleteSignature(
        "Send Authorization: Bearer <token>, or sign the query (AccessKeyId, Timestamp, "
        "SignatureNonce, Signature)."
    )


async def refuse(send: Send, exc: errors.GatewayError) -> None:
    """401 before the upgrade, with the code and message as JSON."""
    body = orjson.dumps({"Code": exc.code, "Message": exc.message})
    await refuse_websocket(send, 401, b"application/json", body)

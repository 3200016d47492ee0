"""Signing and verifying Alibaba Cloud API requests, both kinds the SDKs send.

- RPC v1 (`SignatureMethod=HMAC-SHA1`, VoiceNavigator seed §3): the sorted,
  percent-encoded parameters form the canonical query; the string to sign is
  `METHOD&%2F&percentEncode(canonical)`; the key is `secret + "&"`; the
  signature is base64 of the HMAC-SHA1.
- ACS3-HMAC-SHA256 (the current SDKs): a canonical request of method, path,
  sorted query, the signed headers and the body's SHA-256; the string to sign
  is `ACS3-HMAC-SHA256\\n` + hex SHA-256 of that; the signature is the hex
  HMAC-SHA256 with the secret.

Pure functions only; `gateway.api.auth` decides what to accept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

ACS3 = "ACS3-HMAC-SHA256"


_UNRESERVED = re.compile(r"[A-Za-z0-9\-_.~]*")


def percent_encode(value: str) -> str:
    """RFC 3986 encoding: only A-Z a-z 0-9 - _ . ~ stay as they are; space is %20."""
    # Most values (ids, nonces, numbers) need no encoding at all: skip quote().
    if _UNRESERVED.fullmatch(value):
        return value
    return quote(value, safe="-_.~")


def _encode_canonical(query: str) -> str:
    # A canonical query holds only unreserved characters, '%', '=' and '&':
    # encoding it again needs just these three replacements.
    return query.replace("%", "%25").replace("=", "%3D").replace("&", "%26")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params)
    return "&".join([f"{k}={v}" for k, v in pairs])


# -- RPC v1 -----------------------------------------------------------------


def join_canonical(pieces: list[str]) -> str:
    """Canonical `name=value` pieces, sorted by name then value, joined by '&'.

    Plain string order would put "a-b=1" before "a=2" ('-' < '='); with '='
    swapped for NUL, the lowest character, plain sorting orders by name
    first. One replace over the joined text instead of a key per piece.
    """
    swapped = "&".join(pieces).replace("=", "\x00").split("&")
    swapped.sort()
    return "&".join(swapped).replace("\x00", "=")


def rpc_v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    pieces = [
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items() if k != "Signature"
    ]
    return rpc_v1_string_to_sign_query(method, join_canonical(pieces))


def rpc_v1_string_to_sign_query(method: str, canonical_query: str) -> str:
    """The string to sign from the sorted canonical query (`join_canonical`)."""
    return f"{method.upper()}&%2F&{_encode_canonical(canonical_query)}"


def rpc_v1_key(secret: str) -> hmac.HMAC:
    """The HMAC-SHA1 keyed with `secret + "&"`, ready to copy per request."""
    return hmac.new(f"{secret}&".encode(), digestmod=hashlib.sha1)


def rpc_v1_sign_with(key: hmac.HMAC, string_to_sign: str) -> str:
    h = key.copy()
    h.update(string_to_sign.encode())
    return base64.b64encode(h.digest()).decode()


def rpc_v1_sign(secret: str, string_to_sign: str) -> str:
    return rpc_v1_sign_with(rpc_v1_key(secret), string_to_sign)


def rpc_v1_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    return rpc_v1_sign(secret, rpc_v1_string_to_sign(method, params))


# -- websocket handshakes --------------------------------------------------------
# A websocket client cannot set most headers from a browser, so the gateway also
# takes a signed query on the upgrade request: the RPC v1 recipe with the path in
# place of "/" (`GET&percentEncode(path)&percentEncode(canonical)`), over
# AccessKeyId, Timestamp, SignatureNonce and any other query parameters.


def handshake_string_to_sign(path: str, params: Mapping[str, str]) -> str:
    pieces = [
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in params.items() if k != "Signature"
    ]
    canonical = _encode_canonical(join_canonical(pieces))
    return f"GET&{percent_encode(path)}&{canonical}"


def handshake_signature(secret: str, path: str, params: Mapping[str, str]) -> str:
    """The `Signature` a client adds to its upgrade query for `path`."""
    return rpc_v1_sign(secret, handshake_string_to_sign(path, params))


# -- ACS3-HMAC-SHA256 ---------------------------------------------------------


def acs3_canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    payload_sha256: str,
) -> str:
    """`headers` maps lower-case names to values; every signed header must be in it."""
    names = sorted(h.lower() for h in signed_headers)
    canonical_headers = "".join(f"{n}:{headers[n].strip()}\n" for n in names)
    return "\n".join(
        (
            method.upper(),
            path or "/",
            canonical_query(query),
            canonical_headers,
            ";".join(names),
            payload_sha256,
        )
    )


def acs3_string_to_sign(canonical_request: str) -> str:
    return f"{ACS3}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"


def acs3_signature(secret: str, canonical_request: str) -> str:
    string_to_sign = acs3_string_to_sign(canonical_request)
    return hmac.digest(secret.encode(), string_to_sign.encode(), "sha256").hex()


def parse_acs3_authorization(value: str) -> dict[str, str] | None:
    """`ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..` as a dict, or None."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ACS3:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if not sep:
            return None
        fields[name] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields


def sign_acs3_headers(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
) -> dict[str, str]:
    """Add x-acs-content-sha256 and Authorization to `headers` (lower-case names)."""
    headers["x-acs-content-sha256"] = hashlib.sha256(body).hexdigest()
    signed = sorted(n for n in headers if n.startswith("x-acs-") or n in ("host", "content-type"))
    canonical = acs3_canonical_request(
        method, path, query, headers, signed, headers["x-acs-content-sha256"]
    )
    signature = acs3_signature(secret, canonical)
    headers["authorization"] = (
        f"{ACS3} Credential={key_id},SignedHeaders={';'.join(signed)},Signature={signature}"
    )
    return headers


# -- webhook bots: a timestamped HMAC-SHA256 of the body -----------------------
# The gateway sends, with every webhook request:
#   X-Ivrgw-Timestamp: <unix seconds>
#   X-Ivrgw-Delivery:  <an id unique per request>
#   X-Ivrgw-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<delivery>." + body)>
# docs/bots.md gives the verification recipe for bot authors.

WEBHOOK_TIMESTAMP = "x-ivrgw-timestamp"
WEBHOOK_DELIVERY = "x-ivrgw-delivery"
WEBHOOK_SIGNATURE = "x-ivrgw-signature"


def webhook_key(secret: str) -> hmac.HMAC:
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def webhook_signature(key: hmac.HMAC, timestamp: str, delivery: str, body: bytes) -> str:
    h = key.copy()
    h.update(f"{timestamp}.{delivery}.".encode())
    h.update(body)
    return "v1=" + h.hexdigest()


def webhook_sign(secret: bytes, timestamp: str, delivery: str, body: bytes) -> str:
    """The same signature in one call: `hmac.digest` runs in C (a few µs less per request)."""
    message = f"{timestamp}.{delivery}.".encode() + body
    return "v1=" + hmac.digest(secret, message, "sha256").hex()


def webhook_verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, window: float = 300.0
) -> bool:
    """A bot's check of one request (names lower-case): signature, then freshness.

    Refusing a replayed delivery id within `window` is the bot's part (it
    keeps the ids it saw for that long).
    """
    timestamp = headers.get(WEBHOOK_TIMESTAMP, "")
    delivery = headers.get(WEBHOOK_DELIVERY, "")
    given = headers.get(WEBHOOK_SIGNATURE, "")
    if not timestamp.isdigit() or not delivery:
        return False
    expected = webhook_signature(webhook_key(secret), timestamp, delivery, body)
    return hmac.compare_digest(expected, given) and abs(now - int(timestamp)) <= window

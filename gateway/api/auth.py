"""Access keys, policies, timestamps and single-use nonces for the RPC API.

A request is accepted when:
1. it is signed with RPC v1 (HMAC-SHA1 in the parameters) or ACS3-HMAC-SHA256
   (the Authorization header) by a configured access key;
2. its timestamp (`Timestamp`, or the `x-acs-date` header) is within
   `window` seconds of the gateway's clock, either way;
3. its nonce (`SignatureNonce`, or `x-acs-signature-nonce`) has not been seen
   for that key while the timestamp could still be accepted;
4. the key's policy allows the action. `read-only` is the seed's
   AliyunVoicebotReadOnlyAccess (§5) read as RAM reads it: `voicebot:List*`
   and `voicebot:Describe*` are wildcards, while `voicebot:Query` and
   `voicebot:Export` carry none and so match only actions named exactly
   `Query` or `Export`, of which there are none. A read-only key can list
   and describe everything (ListConversations, DescribeStatisticalData,
   DescribeExportProgress ...) but cannot run QueryConversations or start an
   export (docs/api.md).

The nonce cache is bounded. When it is full, the oldest nonces are forgotten
and every timestamp at or before the newest forgotten one is refused as
expired, so a forgotten nonce can never be replayed; under extreme load the
effective window shrinks rather than memory growing.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from gateway import errors
from gateway.net import signing

Policy = Literal["full", "read-only"]
READ_ONLY_PREFIXES = ("List", "Describe")
READ_ONLY_EXACT = frozenset(("Query", "Export"))

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?Z")


@dataclass(frozen=True, slots=True)
class AccessKey:
    id: str
    secret: str
    policy: Policy
    user: str

    def __repr__(self) -> str:
        # Never the secret.
        return f"AccessKey(id={self.id!r}, policy={self.policy!r}, user={self.user!r})"


@lru_cache(maxsize=256)
def parse_timestamp(value: str) -> float:
    """`YYYY-MM-DDThh:mm:ss[.fff]Z` (UTC) as POSIX seconds."""
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        raise errors.TimestampFormat()
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise errors.TimestampFormat()
    return float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))


def allowed(policy: Policy, action: str) -> bool:
    return policy == "full" or action.startswith(READ_ONLY_PREFIXES) or action in READ_ONLY_EXACT


def _mismatch(string_to_sign: str) -> errors.SignatureDoesNotMatch:
    # Alibaba Cloud's own wording: the SDKs split the message at the first ':'
    # and compare the rest with their string to sign, to tell a wrong secret
    # from a wrongly built request. The string to sign holds no secret.
    return errors.SignatureDoesNotMatch(
        "Specified signature is not matched with our calculation. "
        f"server string to sign is:{string_to_sign}"
    )


class NonceCache:
    """Nonces seen within the acceptance window, bounded in size."""

    __slots__ = ("_order", "_seen", "floor", "max_entries", "window")

    def __init__(self, window: float, max_entries: int) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()
        # Timestamps at or before this are refused: their nonces may be forgotten.
        self.floor = float("-inf")

    def check_and_add(self, key_id: str, nonce: str, timestamp: float, now: float) -> None:
        order = self._order
        # Forget nonces whose timestamps can no longer be accepted.
        horizon = now - self.window
        while order and order[0][0] < horizon:
            self._seen.discard(order.popleft()[1])
        if timestamp <= self.floor:
            raise errors.TimestampExpired()
        entry = f"{key_id}\x00{nonce}"
        if entry in self._seen:
            raise errors.NonceUsed(key_id=key_id, nonce=nonce)
        self._seen.add(entry)
        order.append((timestamp, entry))
        while len(order) > self.max_entries:
            ts, old = order.popleft()
            self._seen.discard(old)
            self.floor = max(self.floor, ts)

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return (
            f"NonceCache(entries={len(self._seen)}, window={self.window}, max={self.max_entries})"
        )


class Authenticator:
    """Verifies a request's signature, timestamp, nonce and policy."""

    def __init__(self, keys: Mapping[str, AccessKey], window: float, max_nonces: int) -> None:
        self.keys = dict(keys)
        # Each key's HMAC state, prepared once and copied per request.
        self._v1_keys = {k.id: signing.rpc_v1_key(k.secret) for k in self.keys.values()}
        self.window = window
        self.nonces = NonceCache(window, max_nonces)

    def _key(self, key_id: str) -> AccessKey:
        key = self.keys.get(key_id)
        if key is None:
            raise errors.AccessKeyNotFound()
        return key

    def _fresh(self, key: AccessKey, timestamp: str, nonce: str, now: float) -> None:
        ts = parse_timestamp(timestamp)
        if abs(now - ts) > self.window:
            raise errors.TimestampExpired()
        if not nonce or len(nonce) > 128:
            raise errors.IncompleteSignature("SignatureNonce is missing or too long.")
        self.nonces.check_and_add(key.id, nonce, ts, now)

    def verify_rpc_v1(
        self,
        method: str,
        params: Mapping[str, str],
        now: float,
        canonical_query: str | None = None,
    ) -> AccessKey:
        """`canonical_query`: the sorted canonical query of the signed
        parameters, if the caller has it (gateway.api.query); else it is
        built from `params`."""
        signature = params.get("Signature")
        key_id = params.get("AccessKeyId")
        if not signature or not key_id:
            raise errors.IncompleteSignature()
        if params.get("SignatureMethod", "").upper() != "HMAC-SHA1":
            raise errors.IncompleteSignature("SignatureMethod must be HMAC-SHA1.")
        if params.get("SignatureVersion", "1.0") != "1.0":
            raise errors.IncompleteSignature("SignatureVersion must be 1.0.")
        key = self._key(key_id)
        if canonical_query is None:
            string_to_sign = signing.rpc_v1_string_to_sign(method, params)
        else:
            string_to_sign = signing.rpc_v1_string_to_sign_query(method, canonical_query)
        expected = signing.rpc_v1_sign_with(self._v1_keys[key.id], string_to_sign)
        # A '+' in an unencoded signature arrives as a space after form decoding.
        if not hmac.compare_digest(expected, signature.replace(" ", "+")):
            raise _mismatch(string_to_sign)
        self._fresh(key, params.get("Timestamp", ""), params.get("SignatureNonce", ""), now)
        return key

    def verify_acs3(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> AccessKey:
        fields = signing.parse_acs3_authorization(headers.get("authorization", ""))
        if fields is None:
            raise errors.IncompleteSignature()
        key = self._key(fields["Credential"])
        signed = [h for h in fields["SignedHeaders"].split(";") if h]
        # The headers that make a request unique and fresh must be signed.
        required = ("x-acs-action", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")
        if any(h not in signed or h not in headers for h in required):
            raise errors.IncompleteSignature(
                "x-acs-action, x-acs-date, x-acs-signature-nonce and x-acs-content-sha256 "
                "must be present and signed."
            )
        if any(h not in headers for h in signed):
            raise errors.IncompleteSignature("A signed header is missing from the request.")
        payload = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(payload, headers["x-acs-content-sha256"].lower()):
            raise errors.SignatureDoesNotMatch("x-acs-content-sha256 does not match the body.")
        canonical = signing.acs3_canonical_request(method, path, query, headers, signed, payload)
        if not hmac.compare_digest(
            signing.acs3_signature(key.secret, canonical), fields["Signature"]
        ):
            raise _mismatch(signing.acs3_string_to_sign(canonical))
        self._fresh(key, headers["x-acs-date"], headers["x-acs-signature-nonce"], now)
        return key

    def verify_handshake(self, path: str, params: Mapping[str, str], now: float) -> AccessKey:
        """A websocket upgrade signed in its query (`signing.handshake_string_to_sign`):
        the same key, timestamp window and single-use nonce rules as an RPC call."""
        signature = params.get("Signature")
        key_id = params.get("AccessKeyId")
        if not signature or not key_id:
            raise errors.IncompleteSignature()
        key = self._key(key_id)
        string_to_sign = signing.handshake_string_to_sign(path, params)
        expected = signing.rpc_v1_sign_with(self._v1_keys[key.id], string_to_sign)
        if not hmac.compare_digest(expected, signature.replace(" ", "+")):
            raise _mismatch(string_to_sign)
        self._fresh(key, params.get("Timestamp", ""), params.get("SignatureNonce", ""), now)
        return key

    def authorize(self, key: AccessKey, action: str) -> None:
        if not allowed(key.policy, action):
            raise errors.Forbidden(
                f"The access key's policy ({key.policy}) does not allow the action {action}."
            )

    def __repr__(self) -> str:
        return f"Authenticator(keys={sorted(self.keys)}, window={self.window}, {self.nonces!r})"

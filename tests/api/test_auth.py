from __future__ import annotations

import pytest

from gateway import errors
from gateway.api.auth import AccessKey, Authenticator, NonceCache, allowed, parse_timestamp


def test_parse_timestamp_accepts_sdk_formats_only() -> None:
    assert parse_timestamp("1970-01-01T00:01:00Z") == 60.0
    assert parse_timestamp("1970-01-01T00:01:00.123Z") == 60.0
    for bad in ("1970-01-01 00:01:00", "yesterday", "1970-13-01T00:00:00Z", ""):
        with pytest.raises(errors.TimestampFormat):
            parse_timestamp(bad)


def test_read_only_policy_allows_reads_only() -> None:
    assert allowed("read-only", "DescribeNavigationConfig")
    assert allowed("read-only", "ListInstances")
    assert allowed("read-only", "DescribeExportProgress")
    # The seed's policy names voicebot:Query and voicebot:Export without a
    # wildcard: RAM matches them exactly, and no action has those names.
    assert not allowed("read-only", "QueryConversations")
    assert not allowed("read-only", "ExportStatisticalData")
    assert not allowed("read-only", "ModifyGreetingConfig")
    assert not allowed("read-only", "BeginDialogue")
    assert allowed("full", "BeginDialogue")


def test_nonce_is_single_use_within_window_and_forgotten_after() -> None:
    cache = NonceCache(window=900, max_entries=1000)
    cache.check_and_add("k", "n1", timestamp=1000.0, now=1000.0)
    with pytest.raises(errors.NonceUsed):
        cache.check_and_add("k", "n1", timestamp=1000.0, now=1500.0)
    cache.check_and_add("other-key", "n1", timestamp=1000.0, now=1500.0)
    cache.check_and_add("k", "n2", timestamp=3000.0, now=3000.0)  # n1 aged out
    assert len(cache) == 1


def test_full_nonce_cache_refuses_timestamps_it_can_no_longer_protect() -> None:
    cache = NonceCache(window=900, max_entries=1000)
    for i in range(1001):
        cache.check_and_add("k", f"n{i}", timestamp=1000.0 + i / 100, now=1010.0)
    assert len(cache) == 1000
    # n0 was forgotten; replaying it must still fail, as expired.
    with pytest.raises(errors.TimestampExpired):
        cache.check_and_add("k", "n0", timestamp=1000.0, now=1011.0)
    cache.check_and_add("k", "fresh", timestamp=1011.0, now=1011.0)


def test_authenticator_rejects_unknown_key_and_repr_hides_secret() -> None:
    key = AccessKey("id1", "very-secret", "full", "u")
    auth = Authenticator({"id1": key}, 900, 1000)
    with pytest.raises(errors.AccessKeyNotFound):
        auth.verify_rpc_v1(
            "GET", {"AccessKeyId": "nope", "Signature": "x", "SignatureMethod": "HMAC-SHA1"}, 0
        )
    with pytest.raises(errors.IncompleteSignature):
        auth.verify_rpc_v1("GET", {"AccessKeyId": "id1"}, 0)
    assert "very-secret" not in repr(key) + repr(auth)


def test_handshake_signature_verifies_once_and_binds_path_and_params() -> None:
    from gateway.net.signing import handshake_signature

    key = AccessKey("id1", "very-secret", "read-only", "u")
    auth = Authenticator({"id1": key}, 900, 1000)
    params = {
        "AccessKeyId": "id1",
        "Timestamp": "1970-01-01T00:16:40Z",
        "SignatureNonce": "n-1",
        "instance": "demo",
    }
    signed = {**params, "Signature": handshake_signature("very-secret", "/ws/monitor", params)}
    assert auth.verify_handshake("/ws/monitor", signed, 1000.0) is key
    with pytest.raises(errors.NonceUsed):
        auth.verify_handshake("/ws/monitor", signed, 1000.0)
    again = {**params, "SignatureNonce": "n-2"}
    again["Signature"] = handshake_signature("very-secret", "/ws/monitor", again)
    # The same query signed for another path, or with a parameter changed, fails.
    with pytest.raises(errors.SignatureDoesNotMatch):
        auth.verify_handshake("/ws", again, 1000.0)
    with pytest.raises(errors.SignatureDoesNotMatch):
        auth.verify_handshake("/ws/monitor", {**again, "instance": "other"}, 1000.0)
    with pytest.raises(errors.TimestampExpired):
        auth.verify_handshake("/ws/monitor", again, 1000.0 + 901)
    with pytest.raises(errors.IncompleteSignature):
        auth.verify_handshake("/ws/monitor", params, 1000.0)
    with pytest.raises(errors.AccessKeyNotFound):
        auth.verify_handshake("/ws/monitor", {**again, "AccessKeyId": "x"}, 1000.0)

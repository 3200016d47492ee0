"""Query strings and form bodies: `a=1&b=%E4%BD%A0+x` to decoded pairs.

Each pair keeps its raw (wire) form as well. RPC v1 signing needs every
value in RFC 3986 form, and SDKs already send most values exactly that way,
so `canonical` reuses the wire text when it is canonical instead of
re-encoding the decoded value (the costly part of verifying a signature).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway import errors
from gateway.net import signing
from gateway.net.signing import percent_encode

# Canonical text is unreserved characters and upper-case %XX escapes, where
# no escape stands for an unreserved character (those must be bare). The
# character check is `bytes.translate` deleting the allowed bytes (a table
# loop in C; the regex engine costs tens of instructions a character, and a
# `(?:x|%XX)*` fullmatch hundreds); the escape checks are searches that
# start with a literal '%', which the regex engine finds by a fast scan.
_UNRESERVED_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~%"
_QUERY_BYTES = _UNRESERVED_BYTES + b"=&"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-F]{2})")
_ESCAPED_UNRESERVED = re.compile(r"%(?:2[DE]|3[0-9]|4[1-9A-F]|5[0-9AF]|6[1-9A-F]|7[0-9AE])")

Pair = tuple[str, str, str, str]  # name, value, raw name, raw value


def _decode(raw: str) -> str:
    """Form-decode one name or value ('+' is a space); invalid UTF-8 raises.

    `urllib.parse.unquote` walks the escapes in Python; a Chinese utterance
    is all escapes. Rewriting `%XX` as `\\xXX` lets the C codecs do it: each
    escape becomes one latin-1 code point, i.e. one byte, then UTF-8 decodes.
    A backslash in the input, or a malformed escape, takes the slow path,
    which leaves malformed escapes as they are, like unquote does.
    """
    if "+" in raw:
        raw = raw.replace("+", " ")
    if "%" not in raw:
        return raw
    if len(raw) % 3 == 0 and raw[::3] == "%" * (len(raw) // 3):
        # Escapes only (how SDKs send Chinese text): straight from hex, when
        # every escape has two hex digits (fromhex would skip white space).
        digits = raw.replace("%", "")
        if len(digits) * 3 == len(raw) * 2 and digits.isalnum():
            try:
                return bytes.fromhex(digits).decode("utf-8")
            except UnicodeDecodeError:
                raise
            except ValueError:
                pass  # not hex: the general path below handles it
    if "\\" not in raw:
        try:
            latin = raw.replace("%", "\\x").encode("ascii").decode("unicode_escape")
        except UnicodeDecodeError:
            pass
        else:
            return latin.encode("latin-1").decode("utf-8")
    return unquote(raw, errors="strict")


def parse(raw: bytes, what: str) -> dict[str, str]:
    """Decoded parameters (the last of a repeated name wins); see `pairs`."""
    try:
        params: dict[str, str] = {}
        for piece in raw.decode("ascii").split("&"):
            if piece:
                name, _, value = piece.partition("=")
                if "%" in name or "+" in name:
                    name = _decode(name)
                params[name] = _decode(value) if "%" in value or "+" in value else value
        return params
    except UnicodeDecodeError:
        raise errors.InvalidParameter(f"The {what} is not valid percent-encoded UTF-8.") from None


def pairs(raw: bytes, what: str) -> list[Pair]:
    """Decoded pairs in wire order with their raw text, blanks kept.

    '+' is a space (form encoding). Only pieces with '%' or '+' are decoded.
    Bytes that are not ASCII, or escapes that are not UTF-8, are
    InvalidParameter.
    """
    try:
        text = raw.decode("ascii")
        pairs: list[Pair] = []
        for piece in text.split("&"):
            if not piece:
                continue
            raw_name, _, raw_value = piece.partition("=")
            name = _decode(raw_name) if "%" in raw_name or "+" in raw_name else raw_name
            value = _decode(raw_value) if "%" in raw_value or "+" in raw_value else raw_value
            pairs.append((name, value, raw_name, raw_value))
        return pairs
    except UnicodeDecodeError:
        raise errors.InvalidParameter(f"The {what} is not valid percent-encoded UTF-8.") from None


def _canonical(decoded: str, raw: str) -> str:
    if (
        raw is not decoded
        and not raw.encode("ascii").translate(None, _UNRESERVED_BYTES)
        and not _BAD_ESCAPE.search(raw)
        and not _ESCAPED_UNRESERVED.search(raw)
    ):
        return raw
    return percent_encode(decoded)


def canonical(pairs: list[Pair], exclude: str) -> str:
    """The sorted canonical query of every pair except the one named `exclude`."""
    return signing.join_canonical(
        [f"{_canonical(n, rn)}={_canonical(v, rv)}" for n, v, rn, rv in pairs if n != exclude]
    )


# Every byte except the two separators: deleting these leaves "=&=&...=".
_NOT_SEPARATORS = bytes(b for b in range(256) if b not in b"=&")


def canonical_from_wire(raw: bytes, exclude: str) -> str | None:
    """The sorted canonical query straight from the wire text, or None.

    Applies when the raw text is already canonical, as the core SDK sends
    it: every piece `name=value` with exactly one '=', a non-empty name,
    and canonical characters only. Then the pieces are sorted as they are,
    instead of every name and value being decoded and encoded again. All
    checks and steps are single C-level string operations.
    """
    if raw.translate(None, _QUERY_BYTES) or raw.startswith(b"=") or b"&=" in raw:
        return None
    separators = raw.translate(None, _NOT_SEPARATORS)
    if separators != b"=&" * separators.count(b"&") + b"=":
        return None
    text = raw.decode("ascii")
    if "%" in text and (_BAD_ESCAPE.search(text) or _ESCAPED_UNRESERVED.search(text)):
        return None
    pieces = text.split("&")
    prefix = exclude + "="
    start = 0 if text.startswith(prefix) else text.find("&" + prefix) + 1
    if start or text.startswith(prefix):
        end = text.find("&", start)
        pieces.remove(text[start:] if end < 0 else text[start:end])
    return signing.join_canonical(pieces)

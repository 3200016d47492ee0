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
from gateway.net.signing import percent_encode

# Unreserved characters and upper-case %XX escapes only...
_CANONICAL = re.compile(r"(?:[A-Za-z0-9\-_.~]|%[0-9A-F]{2})*")
# ...where no escape stands for an unreserved character (those must be bare).
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
    if "\\" not in raw:
        try:
            latin = raw.replace("%", "\\x").encode("ascii").decode("unicode_escape")
        except UnicodeDecodeError:
            pass
        else:
            return latin.encode("latin-1").decode("utf-8")
    return unquote(raw, errors="strict")


def parse(raw: bytes, what: str) -> list[Pair]:
    """Decoded pairs in wire order, blanks kept; '+' is a space (form encoding).

    Only pieces with '%' or '+' are decoded. Bytes that are not ASCII, or
    escapes that are not UTF-8, are InvalidParameter.
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
    if raw is not decoded and _CANONICAL.fullmatch(raw) and not _ESCAPED_UNRESERVED.search(raw):
        return raw
    return percent_encode(decoded)


def canonical(pairs: list[Pair], exclude: str) -> list[tuple[str, str]]:
    """The RFC 3986 form of every pair except the one named `exclude`."""
    return [(_canonical(n, rn), _canonical(v, rv)) for n, v, rn, rv in pairs if n != exclude]

from __future__ import annotations

import string
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import errors
from gateway.api import query
from gateway.net.signing import join_canonical, percent_encode


def test_parse_decodes_percent_and_plus_and_keeps_blanks() -> None:
    pairs = query.pairs(b"a=1&SignatureType=&u=%E4%BD%A0+x&&b", "q")
    assert [(n, v) for n, v, _, _ in pairs] == [
        ("a", "1"),
        ("SignatureType", ""),
        ("u", "你 x"),
        ("b", ""),
    ]


@pytest.mark.parametrize("raw", [b"a=%ff", b"a=\xe4", b"%e4=1"])
def test_parse_refuses_bytes_that_are_not_utf8(raw: bytes) -> None:
    with pytest.raises(errors.InvalidParameter):
        query.parse(raw, "q")
    with pytest.raises(errors.InvalidParameter):
        query.pairs(raw, "q")


@pytest.mark.parametrize(
    "wire",
    [
        "Timestamp=2026-11-22T04%3A19%3A00Z",  # canonical: reused as is
        "u=%E4%BD%A0%20x",  # canonical
        "u=%e4%bd%a0%20x",  # lower-case escapes: re-encoded
        "u=%E4%BD%A0+x",  # '+' for space: re-encoded
        "u=%41BC",  # an escaped unreserved character: re-encoded
        "u=a*b",  # a reserved character left bare: re-encoded
        "Signature=abc&x=1",  # Signature is left out
    ],
)
def test_canonical_equals_encoding_the_decoded_values(wire: str) -> None:
    pairs = query.pairs(wire.encode(), "q")
    expected = join_canonical(
        [f"{percent_encode(n)}={percent_encode(v)}" for n, v, _, _ in pairs if n != "Signature"]
    )
    assert query.canonical(pairs, exclude="Signature") == expected
    # The wire shortcut agrees whenever it applies.
    fast = query.canonical_from_wire(wire.encode(), exclude="Signature")
    assert fast is None or fast == expected


@pytest.mark.parametrize(
    ("wire", "applies"),
    [
        (b"Timestamp=2026-11-22T04%3A19%3A00Z&Signature=x%2By&A=1", True),
        (b"Signature=x&Timestamp=2026-11-22T04%3A19%3A00Z&A=1", True),
        (b"Timestamp=2026-11-22T04%3A19%3A00Z&A=1&Signature=", True),
        (b"u=%e4", False),
        (b"u=a+b", False),
        (b"u=a=b", False),
        (b"flag&x=1", False),
        (b"x=1&&y=2", False),
        (b"=1&x=2", False),
        (b"u=%41", False),
    ],
)
def test_canonical_from_wire_only_for_canonical_text(wire: bytes, applies: bool) -> None:
    fast = query.canonical_from_wire(wire, exclude="Signature")
    assert (fast is not None) == applies
    if fast is not None:
        assert fast == "A=1&Timestamp=2026-11-22T04%3A19%3A00Z"


def test_canonical_from_wire_keeps_a_name_that_only_ends_like_the_excluded_one() -> None:
    assert query.canonical_from_wire(b"XSignature=1&Signature=2", "Signature") == "XSignature=1"


ESCAPES = st.sampled_from(
    [
        "%E4",
        "%BD",
        "%A0",
        "%20",
        "%2b",
        "%4",
        "%zz",
        "%",
        "%%",
        "+",
        "\\",
        "a",
        "~",
        "%C3%A9",
        "%%%ABCDEF",
        "% A",
    ]
)


@given(st.lists(st.one_of(ESCAPES, st.text(alphabet=string.printable, max_size=3)), max_size=12))
def test_fast_decode_equals_unquote_plus(parts: list[str]) -> None:
    raw = "".join(parts)
    try:
        expected: str | None = unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        expected = None
    try:
        got: str | None = query._decode(raw)
    except UnicodeDecodeError:
        got = None
    assert got == expected


NAMES = st.text(alphabet="AZaz09-_.~", min_size=1, max_size=4)


@given(st.lists(st.tuples(NAMES, st.text(max_size=8)), max_size=8), st.booleans())
def test_wire_shortcut_agrees_with_reencoding(params: list[tuple[str, str]], plus: bool) -> None:
    wire = "&".join(f"{percent_encode(n)}={percent_encode(v)}" for n, v in params)
    if plus:
        wire = wire.replace("%20", "+")  # the form-encoding spelling: not canonical
    raw = wire.encode()
    fast = query.canonical_from_wire(raw, exclude="Signature")
    if fast is not None:
        assert fast == query.canonical(query.pairs(raw, "q"), exclude="Signature")

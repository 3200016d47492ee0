"""Response bodies for the RPC API: JSON (the default) and XML.

JSON is one `orjson.dumps`. XML follows Alibaba Cloud's shape: the root is
`<{Action}Response>` (errors: `<Error>`), a list is the same element
repeated, booleans are `true`/`false`. The Content-Type of XML is exactly
`text/xml;charset=utf-8`, the one value the current SDK parses as XML.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any, Literal
from xml.sax.saxutils import escape

import orjson

Format = Literal["JSON", "XML"]

JSON_TYPE = b"application/json;charset=utf-8"
XML_TYPE = b"text/xml;charset=utf-8"
_XML_DECL = "<?xml version='1.0' encoding='UTF-8'?>"


class RequestIds:
    """RequestIds shaped like UUIDs: a random per-process prefix and a counter.

    Unique within a process by construction and across processes by the
    random prefix, at a fraction of the cost of `uuid4()` per request.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        r = os.urandom(10).hex().upper()
        self._prefix = f"{r[:8]}-{r[8:12]}-{r[12:16]}-{r[16:20]}-"
        # A random start below 2**44 leaves 2**44 ids before the 12 hex
        # digits could overflow: centuries at any request rate.
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big") << 20)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012X}"


def _xml_value(name: str, value: Any, out: list[str]) -> None:
    if isinstance(value, list | tuple):
        for item in value:
            _xml_value(name, item, out)
        return
    out.append(f"<{name}>")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _xml_value(k, v, out)
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif value is not None:
        out.append(escape(str(value)))
    out.append(f"</{name}>")


def to_xml(root: str, body: Mapping[str, Any]) -> bytes:
    out = [_XML_DECL]
    _xml_value(root, body, out)
    return "".join(out).encode()


def render(fmt: Format, action: str, body: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(content type, body bytes) for a successful response."""
    if fmt == "XML":
        return XML_TYPE, to_xml(f"{action}Response", body)
    return JSON_TYPE, orjson.dumps(body)


def render_error(fmt: Format, body: Mapping[str, Any]) -> tuple[bytes, bytes]:
    if fmt == "XML":
        return XML_TYPE, to_xml("Error", body)
    return JSON_TYPE, orjson.dumps(body)

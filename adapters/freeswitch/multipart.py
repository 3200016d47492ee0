"""multipart/form-data bodies (a `recordCall` or `record` upload), parsed whole.

python-multipart's streaming parser does the framing; this collects the form
fields (as text) and the files (as bytes), and refuses a body that ends
before its closing boundary, a part without a name, or more than `MAX_PARTS`
parts.
"""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 256


class MultipartError(Exception):
    pass


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """(fields, files) of one body; files are (field name, file name, bytes)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MultipartError("multipart body without a boundary")

    fields: dict[str, str] = {}
    files: list[tuple[str, str, bytes]] = []
    ended = False
    parts = 0
    header_field: list[bytes] = []
    header_value: list[bytes] = []
    headers: dict[bytes, bytes] = {}
    data: list[bytes] = []

    def on_part_begin() -> None:
        nonlocal parts
        headers.clear()
        data.clear()
        parts += 1
        if parts > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_field.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.append(buf[start:end])

    def on_header_end() -> None:
        headers[b"".join(header_field).lower()] = b"".join(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise MultipartError("a part without a name")
        value = b"".join(data)
        filename = disposition.get(b"filename")
        if filename is None:
            fields[name] = value.decode("utf-8", "replace")
        else:
            files.append((name, filename.decode("utf-8", "replace"), value))

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartError:
        raise
    except Exception as exc:  # the library's own parse errors
        raise MultipartError(f"malformed multipart body: {exc}") from None
    if not ended:
        raise MultipartError("the multipart body ends before its closing boundary")
    return fields, files

"""The HTTP client interface that bots and remote services use.

Callers depend on `HttpClient`, never on an implementation: the pooled
client in `gateway.net.pool` is the one the gateway builds at start-up, and
it can be swapped on evidence (bench/pool_compare.py). Failures are raised as
`gateway.errors.BackendError` subclasses; their `kind` is the metrics label.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

Headers = Sequence[tuple[str, str]]


class Response(NamedTuple):
    status: int
    # Names in lower case; a repeated header's values joined with ", ".
    headers: Mapping[str, str]
    body: bytes


class StreamedResponse(Protocol):
    """A response whose body is read as it arrives (server-sent events)."""

    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, de-chunked, in pieces as they arrive."""
        ...


class HttpClient(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes = b"",
        timeout: float,
        max_body: int | None = None,
    ) -> Response:
        """Send one request and read the whole response within `timeout` seconds.

        `max_body` caps the response body (the client's default when None);
        a larger body raises BackendBodyTooLarge without reading it all.
        """
        ...

    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes = b"",
        timeout: float,
        max_body: int | None = None,
    ) -> AbstractAsyncContextManager[StreamedResponse]:
        """Like `request`, but the body is read through `chunks()`.

        `timeout` covers the whole exchange, body included. Leaving the
        context early closes the connection unless the body was read to its end.
        """
        ...

    async def aclose(self) -> None: ...

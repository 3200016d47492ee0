"""Helpers shared by the management API tests (instances, navigation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import GatewayProcess, Response


def ok(r: Response) -> dict[str, Any]:
    """The fields of a 200 answer."""
    assert r.status == 200, r.body
    return r.json  # type: ignore[no-any-return]


def refused(r: Response, status: int, code: str) -> str:
    """The message of an error answer with this status and code."""
    assert (r.status, r.json["Code"]) == (status, code), r.body
    return str(r.json["Message"])


def home(gateway: GatewayProcess) -> Path:
    """The gateway's config directory: its database is var/gateway.db there."""
    return gateway.log_path.parent

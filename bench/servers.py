"""The Starlette baseline: one route answering with the gateway's own reply body.

`python -m uvicorn bench.servers:app`; the body is read at import from the
file named by $BENCH_BODY_FILE (a captured gateway response).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY_ENV = "BENCH_BODY_FILE"
BODY = Path(os.environ[BODY_ENV]).read_bytes() if BODY_ENV in os.environ else b"{}"


async def endpoint(request: Request) -> Response:
    """The captured body, as the gateway sends it."""
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/", endpoint), Route("/freeswitch/httapi", endpoint)])

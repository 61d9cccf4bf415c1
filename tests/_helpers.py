"""Small helpers shared by the test modules: headers, in-process clients, guarded apps.

``bearer`` builds the Authorization header, ``asgi_client`` an httpx client that
calls an ASGI app in process, ``guarded_app`` a Starlette app behind
:class:`BetterAuthMiddleware`; ``ok``, ``whoami`` and ``principal`` (what a handler is
told of the caller) are the endpoints several modules route to. The ``client`` fixture
(conftest) wraps a module's ``app`` fixture in ``asgi_client``; real servers live in
``_serving``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from starlette_betterauth import BetterAuthMiddleware

BASE_URL = "http://testserver"


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header carrying ``token``; no header at all for None (anonymous)."""
    return {} if token is None else {"authorization": f"Bearer {token}"}


def asgi_client(app: ASGIApp) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in process (no lifespan); use it as ``async with``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


def guarded_app(routes: Sequence[BaseRoute], **options: Any) -> Starlette:
    """A Starlette app serving ``routes`` behind ``BetterAuthMiddleware(**options)``."""
    return Starlette(routes=list(routes), middleware=[Middleware(BetterAuthMiddleware, **options)])


async def ok(request: Request) -> PlainTextResponse:
    """Answers ``ok`` to anyone the middleware lets through."""
    return PlainTextResponse("ok")


async def whoami(request: Request) -> JSONResponse:
    """Answers ``{"id": <the signed-in user's id>}``."""
    return JSONResponse({"id": request.state.user.id})


async def principal(request: Request) -> JSONResponse:
    """Answers what the handler knows of the caller: the user's fields and the granted scopes."""
    user = request.state.user
    return JSONResponse(
        {
            "id": user.id,
            "kind": user.kind,
            "client_id": user.client_id,
            "machine": user.is_machine,
            "session_id": user.session_id,
            "scopes": sorted(user.scopes),
            "granted": sorted(request.auth.scopes),
            "expires_at": user.expires_at,
        }
    )


#: Debian's chromium, which the browser tests drive through Playwright.
CHROMIUM = "/usr/bin/chromium"
#: Headless, offline: no first-run screens, updates or background requests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: The ``cli`` fixture (conftest): ``cli(*args)`` gives (exit code, stdout, stderr).
RunCLI = Callable[..., tuple[int, str, str]]

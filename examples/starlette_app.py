"""A Starlette app that trusts users signed in with Better Auth.

Routes: ``/public`` (no token), ``/me`` (the signed-in user's claims), ``/admin``
(the admin role), ``POST /notes`` (echoes a note with the user id) and the
websocket ``/ws`` (echoes each message with the user id).

Run it against a Better Auth server (or the testing kit's JWKSServer)::

    BETTER_AUTH_URL=http://localhost:3000 uvicorn --app-dir examples starlette_app:app

or ``python examples/starlette_app.py`` (``HOST``/``PORT``, default 127.0.0.1:8000).
``CORS_ORIGINS`` (comma-separated, none by default) lets those browser origins
call the API; CORS runs outside the authentication so preflights pass.

It takes Better Auth JWTs (``Authorization: Bearer``). With ``SESSION_COOKIES=1``
it also takes Better Auth's session cookies (``SessionCookie``), for pages on the
same site as the Better Auth server that call it with ``credentials: "include"``:
CORS then allows credentials, and unsafe requests (``POST /notes``) carrying a
cookie must come from one of ``CORS_ORIGINS`` (else the base URL's origin).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, requires_role
from starlette_betterauth.credentials import BearerJWT, Credential, SessionCookie


def cors_origins_from_env() -> list[str]:
    """The browser origins allowed by ``CORS_ORIGINS`` (comma-separated)."""
    return [o.strip() for o in os.environ.get("CORS_ORIGINS", "").split(",") if o.strip()]


def session_cookies_from_env() -> bool:
    """Whether ``SESSION_COOKIES=1`` asks for Better Auth's session cookies to be accepted."""
    return os.environ.get("SESSION_COOKIES", "").strip() == "1"


def signed_in(connection: HTTPConnection) -> BetterAuthUser:
    """The user BetterAuthMiddleware verified for this request."""
    user = connection.state.user
    assert isinstance(user, BetterAuthUser)
    return user


def profile(user: BetterAuthUser) -> dict[str, Any]:
    """What ``/me`` answers: the user, the credential, and every claim of their token."""
    return {
        "kind": user.kind,
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "roles": sorted(user.roles),
        "scopes": sorted(user.scopes),
        "claims": dict(user.claims),
    }


async def public(request: Request) -> JSONResponse:
    return JSONResponse({"message": "anyone may read this"})


async def me(request: Request) -> JSONResponse:
    return JSONResponse(profile(signed_in(request)))


@requires_role("admin")
async def admin(request: Request) -> JSONResponse:
    return JSONResponse({"message": f"welcome, admin {signed_in(request).display_name}"})


async def add_note(request: Request) -> JSONResponse:
    """An unsafe request: with a session cookie, only a trusted origin's page may send it."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    note = body.get("note") if isinstance(body, dict) else None
    if not isinstance(note, str) or len(note) > 500:
        return JSONResponse(
            {"detail": 'send {"note": "..."} (500 characters at most)'}, status_code=422
        )
    return JSONResponse({"user": signed_in(request).id, "note": note})


async def echo(websocket: WebSocket) -> None:
    user = signed_in(websocket)
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_json({"user": user.id, "echo": text})


def create_app(
    *,
    base_url: str | None = None,
    cors_origins: Sequence[str] | None = None,
    session_cookies: bool | None = None,
) -> Starlette:
    """Build the app; the settings default to ``BETTER_AUTH_URL``, ``CORS_ORIGINS`` and
    ``SESSION_COOKIES``."""
    origins = cors_origins_from_env() if cors_origins is None else list(cors_origins)
    cookies = session_cookies_from_env() if session_cookies is None else session_cookies
    accept: list[Credential] = [BearerJWT()]
    if cookies:
        # The pages allowed to call with credentials are the ones trusted to send
        # unsafe requests with the cookie (the base URL's origin when none is given).
        accept.append(SessionCookie(trusted_origins=origins or None))
    middleware = []
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                allow_credentials=cookies,
                expose_headers=["WWW-Authenticate"],
                max_age=600,
            )
        )
    middleware.append(
        Middleware(
            BetterAuthMiddleware,
            base_url=base_url,
            accept=accept,
            public=["/public"],
            warm_on_startup=True,
        )
    )
    routes = [
        Route("/public", public),
        Route("/me", me),
        Route("/admin", admin),
        Route("/notes", add_note, methods=["POST"]),
        WebSocketRoute("/ws", echo),
    ]
    return Starlette(routes=routes, middleware=middleware)


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000"))
    )

"""A FastAPI app that trusts users signed in with Better Auth.

Routes: ``/public`` (no token), ``/me`` (the signed-in user's claims), ``/admin``
(the admin role, as a dependency), ``/editor`` (admin or editor, as a
decorator), ``POST /notes`` (echoes a note with the user id) and the websocket
``/ws`` (echoes each message with the user id). The docs page, ``/docs``, is
public and its Authorize button takes a Better Auth JWT.

Run it against a Better Auth server (or the testing kit's JWKSServer)::

    BETTER_AUTH_URL=http://localhost:3000 uvicorn --app-dir examples fastapi_app:app

or ``python examples/fastapi_app.py`` (``HOST``/``PORT``, default 127.0.0.1:8000).
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
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket
from pydantic import BaseModel, Field
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, requires_role
from starlette_betterauth.credentials import BearerJWT, Credential, SessionCookie
from starlette_betterauth.fastapi import (
    BetterAuthHTTPException,
    CurrentUser,
    bearer_scheme,
    error_handler,
    require_role,
)

router = APIRouter()
Admin = Annotated[BetterAuthUser, Depends(require_role("admin"))]


def cors_origins_from_env() -> list[str]:
    """The browser origins allowed by ``CORS_ORIGINS`` (comma-separated)."""
    return [o.strip() for o in os.environ.get("CORS_ORIGINS", "").split(",") if o.strip()]


def session_cookies_from_env() -> bool:
    """Whether ``SESSION_COOKIES=1`` asks for Better Auth's session cookies to be accepted."""
    return os.environ.get("SESSION_COOKIES", "").strip() == "1"


class Note(BaseModel):
    note: str = Field(max_length=500)


@router.get("/public")
async def public() -> dict[str, str]:
    return {"message": "anyone may read this"}


@router.get("/me")
async def me(user: CurrentUser) -> dict[str, Any]:
    return {
        "kind": user.kind,
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "roles": sorted(user.roles),
        "scopes": sorted(user.scopes),
        "claims": dict(user.claims),
    }


@router.get("/admin")
async def admin(user: Admin) -> dict[str, str]:
    return {"message": f"welcome, admin {user.display_name}"}


@router.post("/notes")
async def add_note(note: Note, user: CurrentUser) -> dict[str, str]:
    """An unsafe request: with a session cookie, only a trusted origin's page may send it."""
    return {"user": user.id, "note": note.note}


@router.get("/editor", dependencies=[Security(bearer_scheme)])
@requires_role(any_of=("admin", "editor"))
async def editor() -> dict[str, str]:
    return {"message": "welcome, editor"}


@router.websocket("/ws")
async def echo(websocket: WebSocket, user: CurrentUser) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_json({"user": user.id, "echo": text})


def create_app(
    *,
    base_url: str | None = None,
    cors_origins: Sequence[str] | None = None,
    session_cookies: bool | None = None,
) -> FastAPI:
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
            public=["/public", "GET,HEAD /docs/*", "GET,HEAD /openapi.json", "GET,HEAD /redoc"],
            warm_on_startup=True,
        )
    )
    app = FastAPI(
        title="starlette-betterauth example",
        middleware=middleware,
        exception_handlers={BetterAuthHTTPException: error_handler},
    )
    app.include_router(router)
    return app


app = create_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000"))
    )

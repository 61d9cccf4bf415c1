"""A FastAPI app that trusts users signed in with Better Auth.

Routes: ``/public`` (no token), ``/me`` (the signed-in user's claims), ``/admin``
(the admin role, as a dependency), ``/editor`` (admin or editor, as a
decorator) and the websocket ``/ws`` (echoes each message with the user id).
The docs page, ``/docs``, is public and its Authorize button takes a Better Auth JWT.

Run it against a Better Auth server (or the testing kit's JWKSServer)::

    BETTER_AUTH_URL=http://localhost:3000 uvicorn --app-dir examples fastapi_app:app

or ``python examples/fastapi_app.py`` (``HOST``/``PORT``, default 127.0.0.1:8000).
``CORS_ORIGINS`` (comma-separated, none by default) lets those browser origins
call the API; CORS runs outside the authentication so preflights pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, requires_role
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


@router.get("/public")
async def public() -> dict[str, str]:
    return {"message": "anyone may read this"}


@router.get("/me")
async def me(user: CurrentUser) -> dict[str, Any]:
    return {
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
    *, base_url: str | None = None, cors_origins: Sequence[str] | None = None
) -> FastAPI:
    """Build the app; the settings default to ``BETTER_AUTH_URL`` and ``CORS_ORIGINS``."""
    origins = cors_origins_from_env() if cors_origins is None else list(cors_origins)
    middleware = []
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET"],
                allow_headers=["Authorization"],
                expose_headers=["WWW-Authenticate"],
                max_age=600,
            )
        )
    middleware.append(
        Middleware(
            BetterAuthMiddleware,
            base_url=base_url,
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

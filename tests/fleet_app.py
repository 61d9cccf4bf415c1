"""The API of the fleet tests: what each uvicorn worker serves, configured from the environment.

``FLEET_MODE``: ``secondary`` (sessions from Better Auth's secondaryStorage, JWT
revocation), ``shared`` (a get-session cache shared in Redis) or ``introspection``
(opaque access tokens, their introspection answers shared in Redis; the client is
``FLEET_CLIENT_ID`` / ``FLEET_CLIENT_SECRET``, the resource ``FLEET_RESOURCE``).
``FLEET_BASE_URL``: Better Auth; ``FLEET_GET_SESSION_URL``: where get-session is asked;
``FLEET_REDIS_URL``, ``FLEET_KEY_PREFIX``, ``FLEET_CACHE_TTL``, ``FLEET_REFUSAL_TTL``,
``FLEET_TIMEOUT`` (of a get-session or introspection call, and so of the fleet's lock).
Every response says which worker answered in ``x-worker`` (its PID), refusals included.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starlette_betterauth import BetterAuthMiddleware, RedisStore
from starlette_betterauth.credentials import (
    AccessToken,
    BearerJWT,
    Credential,
    Introspection,
    SessionToken,
)


async def me(request: Request) -> JSONResponse:
    """The caller."""
    return JSONResponse({"id": request.state.user.id})


async def health(request: Request) -> JSONResponse:
    """Public: which worker answers."""
    return JSONResponse({"pid": os.getpid()})


class WorkerHeader:
    """Adds ``x-worker: <pid>`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (b"x-worker", str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_worker(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_worker)


def create_app() -> ASGIApp:
    """One worker's app (``uvicorn --factory fleet_app:create_app``)."""
    env = os.environ
    secondary = env["FLEET_MODE"] == "secondary"
    store = RedisStore(
        env["FLEET_REDIS_URL"],
        secondary_storage=secondary,
        key_prefix=env.get("FLEET_KEY_PREFIX", "better-auth:"),
        # Generous: 8 workers and the test share 2 cores; a slower answer would
        # count as a Redis failure and make a get-session or introspection call of its own.
        timeout=3.0,
        retry_interval=1.0,
    )
    cache_ttl = float(env.get("FLEET_CACHE_TTL", "60"))
    refusal_ttl = float(env.get("FLEET_REFUSAL_TTL", "5"))
    timeout = float(env.get("FLEET_TIMEOUT", "5"))
    accept: list[Credential]
    if env["FLEET_MODE"] == "introspection":
        introspection = Introspection(
            client_id=env["FLEET_CLIENT_ID"],
            client_secret=env["FLEET_CLIENT_SECRET"],
            redis=store,
            cache_ttl=cache_ttl,
            refusal_ttl=refusal_ttl,
            timeout=timeout,
        )
        accept = [AccessToken(resource=env["FLEET_RESOURCE"], introspection=introspection)]
    else:
        get_session = SessionToken(
            redis=store,
            get_session_url=env["FLEET_GET_SESSION_URL"],
            cache_ttl=cache_ttl,
            refusal_ttl=refusal_ttl,
            timeout=timeout,
        )
        accept = [get_session]
    if secondary:
        accept.append(BearerJWT(redis=store))
    middleware = Middleware(
        BetterAuthMiddleware, base_url=env["FLEET_BASE_URL"], accept=accept, public=["/health"]
    )
    routes = [Route("/me", me), Route("/health", health)]
    return WorkerHeader(Starlette(routes=routes, middleware=[middleware]))

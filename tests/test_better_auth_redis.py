"""The real Better Auth server with its secondaryStorage on a real redis-server.

Better Auth 1.7.25 writes sessions, active-session lists and revocation marks through
``@better-auth/redis-storage`` (``examples/better-auth-server/secondary-storage.mjs``,
``REDIS_URL``); the middleware reads them: no get-session call for a live session, and a
sign-out, ban or revocation refused on the very next request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import httpx
import pytest
from _better_auth import (
    SESSION_COOKIE,
    BetterAuthAPI,
    BetterAuthServer,
    bearer,
    require_server,
    running_server,
)
from _redis import RedisServer, running_redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, RedisStore
from starlette_betterauth._fleet import StoredSessions
from starlette_betterauth.credentials import BearerJWT, Credential, SessionCookie, SessionToken

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
PREFIX = "auth-test:"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def auth_server(redis_server: RedisServer) -> Iterator[BetterAuthServer]:
    require_server()
    with running_server(REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=PREFIX) as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer) -> RedisStore:
    return RedisStore(redis_server.url, key_prefix=PREFIX)


async def me(request: Request) -> JSONResponse:
    user = request.state.user
    return JSONResponse({"id": user.id, "kind": user.kind, "email": user.email})


@asynccontextmanager
async def api(
    server: BetterAuthServer, accept: Sequence[Credential]
) -> AsyncIterator[tuple[BetterAuthMiddleware, httpx.AsyncClient]]:
    app = BetterAuthMiddleware(
        Starlette(routes=[Route("/me", me)]), base_url=server.url, accept=accept
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as client:
            yield app, client
    finally:
        await app.aclose()


def lookups(app: BetterAuthMiddleware) -> list[StoredSessions]:
    found = [getattr(kind, "sessions", None) for kind in app.kinds]
    return [each for each in found if isinstance(each, StoredSessions)]


def cookie(value: str) -> dict[str, str]:
    return {"cookie": f"{SESSION_COOKIE}={value}"}


@asyncio_only
async def test_sessions_are_read_from_redis_and_sign_out_is_seen_at_once(
    auth_server: BetterAuthServer, store: RedisStore
) -> None:
    async with BetterAuthAPI(auth_server) as auth:
        account = await auth.sign_up()
        accept = [SessionCookie(redis=store), SessionToken(redis=store)]
        async with api(auth_server, accept) as (app, client):
            for _ in range(5):
                by_token = await client.get("/me", headers=bearer(account.session_token))
                by_cookie = await client.get("/me", headers=cookie(account.cookie))
                assert by_token.status_code == by_cookie.status_code == 200
            assert by_token.json()["id"] == by_cookie.json()["id"] == account.user_id
            response = await auth.http.post(
                auth_server.api_url("/sign-out"), headers=bearer(account.session_token)
            )
            assert response.status_code == 200, response.text
            after = [
                await client.get("/me", headers=bearer(account.session_token)),
                await client.get("/me", headers=cookie(account.cookie)),
            ]
            statuses = [each.status() for each in lookups(app)]
    assert [r.status_code for r in after] == [401, 401]
    assert [s.get_session_calls for s in statuses] == [0, 0]
    assert sum(s.reads for s in statuses) == 12


@asyncio_only
async def test_a_ban_refuses_sessions_and_earlier_jwts_at_once(
    auth_server: BetterAuthServer, store: RedisStore
) -> None:
    async with BetterAuthAPI(auth_server) as auth:
        admin = await auth.admin()
        user, bystander = await auth.sign_up(), await auth.sign_up()
        user_jwt, bystander_jwt = await auth.jwt(user), await auth.jwt(bystander)
        accept: list[Credential] = [
            SessionToken(redis=store),
            BearerJWT(redis=store, revocation_ttl=0),
        ]
        async with api(auth_server, accept) as (_, client):

            async def codes() -> list[int]:
                tokens = (user.session_token, user_jwt, bystander.session_token, bystander_jwt)
                return [
                    (await client.get("/me", headers=bearer(token))).status_code for token in tokens
                ]

            before = await codes()
            response = await auth.http.post(
                auth_server.api_url("/admin/ban-user"),
                headers=bearer(admin.session_token),
                json={"userId": user.user_id},
            )
            assert response.status_code == 200, response.text
            after = await codes()
    assert before == [200, 200, 200, 200]
    # The session is deleted, and the JWT was issued before the user's revocation mark.
    assert after == [401, 401, 200, 200]


@asyncio_only
async def test_revoked_sessions_refuse_earlier_jwts(
    auth_server: BetterAuthServer, store: RedisStore
) -> None:
    async with BetterAuthAPI(auth_server) as auth:
        account = await auth.sign_up()
        other = await auth.sign_in(account.email)
        jwt = await auth.jwt(account)
        accept = [SessionToken(redis=store), BearerJWT(redis=store, revocation_ttl=0)]
        async with api(auth_server, accept) as (_, client):
            assert (await client.get("/me", headers=bearer(jwt))).status_code == 200
            response = await auth.http.post(
                auth_server.api_url("/revoke-sessions"),
                headers=bearer(account.session_token),
                json={},
            )
            assert response.status_code == 200, response.text
            codes = [
                (await client.get("/me", headers=bearer(token))).status_code
                for token in (jwt, account.session_token, other.session_token)
            ]
    assert codes == [401, 401, 401]

"""Against a real Better Auth server: its own JWTs, keys, roles and rotations.

Every token here is issued by Better Auth itself (``examples/better-auth-server``, started with
Node on a free loopback port), obtained through its real HTTP API, and sent through an app that
uses BetterAuthMiddleware, in process (httpx.ASGITransport) and through a real uvicorn.
"""

from __future__ import annotations

import json
import os
import string
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _better_auth import (
    BetterAuthAPI,
    BetterAuthServer,
    bearer,
    make_app,
    require_server,
    running_server,
    server_fixture,
    unverified_part,
)
from _serving import start_uvicorn
from starlette.applications import Starlette
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from starlette_betterauth import TokenVerifier
from starlette_betterauth.testing import ALGORITHMS, b64url

pytestmark = pytest.mark.integration

#: The key type (and curve) Better Auth's jwt plugin makes for each algorithm.
KEY_SHAPES = {
    "EdDSA": ("OKP", "Ed25519"),
    "ES256": ("EC", "P-256"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}
KID_CHARACTERS = set(string.ascii_letters + string.digits)
ISSUER = "https://issuer.example"

default_server = server_fixture("default_server", DEV_ENDPOINTS="1")
rotation_server = server_fixture("rotation_server", DEV_ENDPOINTS="1")
short_lived_server = server_fixture("short_lived_server", JWT_EXPIRATION="4s")
custom_server = server_fixture(
    "custom_server",
    BASE_PATH="/identity",
    JWKS_PATH="/keys",
    JWT_ISSUER=ISSUER,
    JWT_AUDIENCE="api-one,api-two",
)


@pytest.fixture(scope="module", params=ALGORITHMS)
def algorithm_server(request: pytest.FixtureRequest) -> Iterator[BetterAuthServer]:
    """One server per signing algorithm Better Auth offers."""
    require_server()
    with running_server(JWT_ALG=request.param) as server:
        yield server


class Events:
    """Records the middleware's ``on_event`` calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: Mapping[str, Any]) -> None:
        self.seen.append((name, dict(data)))

    def refusals(self) -> list[str]:
        return [data["reason"] for name, data in self.seen if name == "refused"]


@asynccontextmanager
async def app_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def assert_refused(response: httpx.Response, status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["cache-control"] == "no-store"


# -- algorithms ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_algorithm_better_auth_offers_is_verified(
    algorithm_server: BetterAuthServer,
) -> None:
    server = algorithm_server
    async with BetterAuthAPI(server) as api, httpx.AsyncClient() as http:
        account = await api.sign_up(name="Ada")
        tokens = [
            await api.jwt(account),
            await api.jwt_via_cookie(account),
            await api.session_jwt(account),
        ]
        header = unverified_part(tokens[0], 0)
        assert header.keys() == {"alg", "kid"}
        assert header["alg"] == server.alg
        (jwk,) = [k for k in (await api.jwks())["keys"] if k["kid"] == header["kid"]]
        assert (jwk["kty"], jwk.get("crv")) == KEY_SHAPES[server.alg]
        assert jwk["alg"] == server.alg
        assert "use" not in jwk
        assert len(jwk["kid"]) == 32
        assert set(jwk["kid"]) <= KID_CHARACTERS

        verifier = TokenVerifier.for_server(server.url, http_client=http)
        async with app_client(make_app(verifier)) as client:
            for token in tokens:
                response = await client.get("/me", headers=bearer(token))
                assert response.status_code == 200, response.text
                me = response.json()
                assert me["id"] == account.user_id
                assert me["email"] == account.email
                assert me["roles"] == ["user"]
                assert me["claims"]["name"] == "Ada"
                assert me["claims"]["iss"] == me["claims"]["aud"] == server.url
                assert me["claims"]["exp"] - me["claims"]["iat"] == 900
            response = await client.get("/admin", headers=bearer(tokens[0]))
            assert response.status_code == 403
            assert (await client.get("/public")).status_code == 200
            assert_refused(await client.get("/me"))
        # Three tokens, one key: the key set was fetched once.
        assert verifier.jwks.status().fetches == 1


# -- roles ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_admin_role_granted_through_the_admin_plugin(
    default_server: BetterAuthServer,
) -> None:
    async with BetterAuthAPI(default_server) as api, httpx.AsyncClient() as http:
        admin = await api.admin()
        user = await api.sign_up()
        before = await api.jwt(user)
        async with app_client(make_app(base_url=default_server.url, http_client=http)) as client:
            response = await client.get("/admin", headers=bearer(await api.jwt(admin)))
            assert response.status_code == 200, response.text
            assert (await client.get("/admin", headers=bearer(before))).status_code == 403

            assert await api.set_role(admin, user.user_id, "admin") == "admin"
            after = await api.jwt(user)
            assert unverified_part(after, 1)["role"] == "admin"
            response = await client.get("/admin", headers=bearer(after))
            assert response.status_code == 200, response.text
            assert response.json() == {"admin": user.user_id}
            # A JWT issued before the change keeps the old role until it expires.
            assert (await client.get("/admin", headers=bearer(before))).status_code == 403


@pytest.mark.anyio
async def test_several_roles_in_one_claim(default_server: BetterAuthServer) -> None:
    async with BetterAuthAPI(default_server) as api, httpx.AsyncClient() as http:
        admin = await api.admin()
        user = await api.sign_up()
        stored = await api.set_role(admin, user.user_id, ["user", "editor", "admin"])
        assert stored == "user,editor,admin"
        token = await api.jwt(user)
        assert unverified_part(token, 1)["role"] == "user,editor,admin"
        async with app_client(make_app(base_url=default_server.url, http_client=http)) as client:
            me = (await client.get("/me", headers=bearer(token))).json()
            assert me["roles"] == ["admin", "editor", "user"]
            assert {"role:admin", "role:editor", "role:user"} <= set(me["scopes"])
            for path in ("/admin", "/editor"):
                assert (await client.get(path, headers=bearer(token))).status_code == 200

            await api.set_role(admin, user.user_id, ["user", "editor"])
            token = await api.jwt(user)
            assert (await client.get("/editor", headers=bearer(token))).status_code == 200
            assert (await client.get("/admin", headers=bearer(token))).status_code == 403


# -- issuer, audience, paths ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_custom_issuer_audience_list_and_jwks_path(custom_server: BetterAuthServer) -> None:
    server = custom_server
    assert server.jwks_url == f"{server.url}/identity/keys"
    assert server.audience == ["api-one", "api-two"]
    async with BetterAuthAPI(server) as api, httpx.AsyncClient() as http:
        token = await api.jwt(await api.sign_up())
        claims = unverified_part(token, 1)
        assert claims["iss"] == ISSUER
        assert claims["aud"] == ["api-one", "api-two"]

        async def status(events: Events, **options: Any) -> int:
            app = make_app(http_client=http, on_event=events, **options)
            async with app_client(app) as client:
                return (await client.get("/me", headers=bearer(token))).status_code

        located = {"jwks_url": server.jwks_url, "issuer": ISSUER}
        events = Events()
        assert await status(events, **located, audience="api-two") == 200
        assert await status(events, **located, audience=["api-three", "api-one"]) == 200
        assert await status(events, **located, audience="api-three") == 401
        assert events.refusals() == ["InvalidAudienceError"]

        events = Events()
        options = {"base_url": server.url, "jwks_url": server.jwks_url, "audience": "api-one"}
        assert await status(events, **options) == 401
        assert events.refusals() == ["InvalidIssuerError"]

        # The default key set path is not where this server keeps its keys.
        events = Events()
        app = make_app(base_url=server.url, http_client=http, on_event=events)
        async with app_client(app) as client:
            response = await client.get("/me", headers=bearer(token))
        assert_refused(response, 503)
        assert "retry-after" in response.headers
        assert events.refusals() == ["KeySetFetchError"]


# -- key rotation --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rotated_key_is_accepted_on_the_first_request_that_carries_it(
    rotation_server: BetterAuthServer,
) -> None:
    async with BetterAuthAPI(rotation_server) as api, httpx.AsyncClient() as http:
        user = await api.sign_up()
        old = await api.jwt(user)
        # Default JWKSCache settings: the key set is kept for minutes, unknown kids refetch it
        # at most once per refresh_cooldown.
        verifier = TokenVerifier.for_server(rotation_server.url, http_client=http)
        async with app_client(make_app(verifier)) as client:
            assert (await client.get("/me", headers=bearer(old))).status_code == 200
            assert verifier.jwks.status().fetches == 1

            # Rotated right after the app fetched the keys: inside the cooldown.
            kid = await api.rotate_keys()
            new = await api.jwt(user)
            assert unverified_part(new, 0)["kid"] == kid
            assert not verifier.jwks.has_key(kid)
            response = await client.get("/me", headers=bearer(new))
            assert response.status_code == 200, response.text
            assert verifier.jwks.status().fetches == 2

            # Rotated again seconds later: past the cooldown, long before the key set's TTL.
            await anyio.sleep(verifier.jwks.options.refresh_cooldown + 1.0)
            kid = await api.rotate_keys()
            newer = await api.jwt(user)
            assert unverified_part(newer, 0)["kid"] == kid
            response = await client.get("/me", headers=bearer(newer))
            assert response.status_code == 200, response.text
            assert verifier.jwks.status().fetches == 3

            # The earlier keys are still listed (grace period): their tokens still work.
            for token in (old, new):
                assert (await client.get("/me", headers=bearer(token))).status_code == 200
            assert verifier.jwks.status().fetches == 3

        # So does a fresh app that never saw them cached.
        fresh = TokenVerifier.for_server(rotation_server.url, http_client=http)
        async with app_client(make_app(fresh, token_cache_size=0)) as client:
            for token in (old, new, newer):
                assert (await client.get("/me", headers=bearer(token))).status_code == 200


def forged_kid(token: str) -> str:
    """``token`` with its header's kid replaced by a random one (the signature no longer fits,
    but the unknown kid is found first)."""
    header = {**unverified_part(token, 0), "kid": b64url(os.urandom(24))}
    return ".".join([b64url(header), *token.split(".")[1:]])


@pytest.mark.anyio
async def test_random_kids_cost_bounded_fetches_and_never_delay_a_rotation(
    rotation_server: BetterAuthServer,
) -> None:
    async with BetterAuthAPI(rotation_server) as api, httpx.AsyncClient() as http:
        user = await api.sign_up()
        verifier = TokenVerifier.for_server(rotation_server.url, http_client=http)
        events = Events()
        async with app_client(make_app(verifier, on_event=events)) as client:
            assert (await client.get("/me", headers=bearer(await api.jwt(user)))).status_code == 200
            await api.rotate_keys()
            new = await api.jwt(user)
            forged = [forged_kid(new) for _ in range(40)]
            statuses: dict[str, int] = {}

            async def call(token: str) -> None:
                statuses[token] = (await client.get("/me", headers=bearer(token))).status_code

            async with anyio.create_task_group() as group:
                for token in [*forged[:20], new, *forged[20:]]:
                    group.start_soon(call, token)

        assert statuses[new] == 200
        assert [statuses[token] for token in forged] == [401] * 40
        assert events.refusals() == ["UnknownKeyError"] * 40
        # 41 unknown kids arriving together share one refetch (a second only if the burst
        # outlasted a whole cooldown): the first fetch plus one or two, never one each.
        assert 2 <= verifier.jwks.status().fetches <= 3


@pytest.mark.anyio
async def test_token_whose_key_left_the_key_set_is_refused(
    rotation_server: BetterAuthServer,
) -> None:
    async with BetterAuthAPI(rotation_server) as api, httpx.AsyncClient() as http:
        user = await api.sign_up()
        old = await api.jwt(user)
        old_kid = unverified_part(old, 0)["kid"]
        verifier = TokenVerifier.for_server(rotation_server.url, http_client=http)
        events = Events()
        async with app_client(make_app(verifier, on_event=events)) as client:
            assert (await client.get("/me", headers=bearer(old))).status_code == 200
            await api.rotate_keys()
            await api.drop_key(old_kid)
            assert old_kid not in {k["kid"] for k in (await api.jwks())["keys"]}
            new = await api.jwt(user)

            await verifier.jwks.refresh()  # the app's next routine refresh
            assert not verifier.jwks.has_key(old_kid)
            response = await client.get("/me", headers=bearer(old))
            assert_refused(response)
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
            assert (await client.get("/me", headers=bearer(new))).status_code == 200
        assert events.refusals() == ["UnknownKeyError"]


# -- expiry --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_expired_token_is_refused(short_lived_server: BetterAuthServer) -> None:
    async with BetterAuthAPI(short_lived_server) as api, httpx.AsyncClient() as http:
        token = await api.jwt(await api.sign_up())
        claims = unverified_part(token, 1)
        assert claims["exp"] - claims["iat"] == 4
        verifier = TokenVerifier.for_server(short_lived_server.url, leeway=0, http_client=http)
        events = Events()
        async with app_client(make_app(verifier, on_event=events)) as client:
            assert (await client.get("/me", headers=bearer(token))).status_code == 200
            for _ in range(100):  # bounded: the token lives at most 4 s
                if time.time() >= claims["exp"]:
                    break
                await anyio.sleep(0.1)
            response = await client.get("/me", headers=bearer(token))
        assert_refused(response)
        assert response.json()["error_description"] == "the token has expired"
        assert events.refusals() == ["ExpiredTokenError"]


# -- the other kind of bearer token --------------------------------------------------------------


@pytest.mark.anyio
async def test_opaque_session_token_is_refused_with_a_clear_reason(
    default_server: BetterAuthServer,
) -> None:
    async with BetterAuthAPI(default_server) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        assert account.session_token.count(".") == 1
        events = Events()
        app = make_app(base_url=default_server.url, http_client=http, on_event=events)
        async with app_client(app) as client:
            response = await client.get("/me", headers=bearer(account.session_token))
            assert_refused(response)
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
            reason = response.json()["error_description"]
            assert "session token" in reason
            assert "/api/auth/token" in reason
            assert account.session_token not in response.text
            # What the message advises: trade the session token for a JWT.
            token = await api.jwt(account)
            assert (await client.get("/me", headers=bearer(token))).status_code == 200
        assert events.refusals() == ["OpaqueTokenError"]


# -- through a real uvicorn ----------------------------------------------------------------------


async def user_and_admin_tokens(server: BetterAuthServer) -> tuple[str, str, str]:
    async with BetterAuthAPI(server) as api:
        user = await api.sign_up()
        return user.user_id, await api.jwt(user), await api.jwt(await api.admin())


def test_through_uvicorn_http_and_websocket(default_server: BetterAuthServer) -> None:
    user_id, user_token, admin_token = anyio.run(user_and_admin_tokens, default_server)
    env = {"BETTER_AUTH_URL": default_server.url}
    with start_uvicorn("_better_auth:create_app", env=env, factory=True) as uvicorn:
        with httpx.Client(base_url=uvicorn.url, timeout=15.0) as client:
            assert client.get("/public").status_code == 200
            assert_refused(client.get("/me"))
            assert client.get("/me", headers=bearer(user_token)).json()["id"] == user_id
            assert client.get("/admin", headers=bearer(user_token)).status_code == 403
            assert client.get("/admin", headers=bearer(admin_token)).status_code == 200

        ws_url = uvicorn.url.replace("http://", "ws://") + "/ws"
        with connect(ws_url, additional_headers=bearer(user_token), open_timeout=15) as ws:
            assert json.loads(ws.recv(timeout=15)) == {"id": user_id, "roles": ["user"]}
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=15)
        assert refused.value.response.status_code == 401

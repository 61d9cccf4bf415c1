"""Against Better Auth's real OAuth provider: access tokens, introspection, DPoP, and MCP.

Every token here is issued by better-auth 1.7.25 with @better-auth/oauth-provider 1.7.5
(``examples/better-auth-server/oauth-server.mjs``, started with Node on a free loopback
port) through its real HTTP flows: the authorization-code flow with PKCE and the
client_credentials grant. The API checks them with ``AccessToken`` configured with
``base_url`` and ``resource`` only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _helpers import principal
from _oauth_server import (
    ClientApp,
    OAuthAPI,
    OAuthServer,
    free_port,
    mcp_example,
    oauth_server_fixture,
    unverified_part,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, requires_scope
from starlette_betterauth.credentials import AccessToken, BearerJWT, Credential, Introspection
from starlette_betterauth.testing import DPoPKey

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

API = "http://127.0.0.1:8000"
RESOURCE = f"{API}/api"
OTHER = "http://127.0.0.1:8000/other"
MCP_PORT = free_port()
MCP_RESOURCE = f"http://127.0.0.1:{MCP_PORT}/mcp"

oauth = oauth_server_fixture("oauth", RESOURCES=f"{RESOURCE},{OTHER},{MCP_RESOURCE}")


@requires_scope("reports:write")
async def write(request: Request) -> JSONResponse:
    return JSONResponse({"written": True})


def make_app(server: OAuthServer, accept: list[Credential]) -> BetterAuthMiddleware:
    routes = [Route("/api/me", principal), Route("/api/reports", write, methods=["POST"])]
    app = Starlette(routes=routes)
    return BetterAuthMiddleware(app, base_url=server.url, accept=accept)


@asynccontextmanager
async def client_for(app: BetterAuthMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=API) as client:
            yield client
    finally:
        await app.aclose()


@pytest.fixture
async def api(oauth: OAuthServer) -> AsyncIterator[OAuthAPI]:
    async with OAuthAPI(oauth) as driver:
        yield driver


@pytest.fixture
async def client_app(api: OAuthAPI) -> ClientApp:
    return await api.register_client()


@pytest.fixture
async def resource_api(oauth: OAuthServer) -> AsyncIterator[httpx.AsyncClient]:
    """The API configured with base_url and resource only."""
    async with client_for(make_app(oauth, [AccessToken(resource=RESOURCE)])) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_authorization_code_with_pkce(
    oauth: OAuthServer, api: OAuthAPI, client_app: ClientApp, resource_api: httpx.AsyncClient
) -> None:
    _, cookie = await api.sign_up()
    tokens = await api.authorization_code(
        client_app, cookie=cookie, scope="openid reports:read offline_access", resource=RESOURCE
    )
    header, claims = (
        unverified_part(tokens.access_token, 0),
        unverified_part(tokens.access_token, 1),
    )
    # The shape Better Auth 1.7.25's provider gives (RFC 9068).
    assert header["typ"] == "at+jwt"
    assert claims["iss"] == oauth.url + "/api/auth" == oauth.issuer
    assert claims["aud"] == [RESOURCE, f"{oauth.issuer}/oauth2/userinfo"]
    assert claims["client_id"] == claims["azp"] == client_app.client_id
    assert {"sub", "sid", "jti", "iat", "exp", "scope"} <= set(claims)
    assert tokens.token_type == "Bearer"
    response = await resource_api.get("/api/me", headers=bearer(tokens.access_token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == claims["sub"]
    assert body["kind"] == "access_token"
    assert body["client_id"] == client_app.client_id
    assert body["machine"] is False
    assert body["session_id"] == claims["sid"]
    assert body["scopes"] == ["offline_access", "openid", "reports:read"]
    assert "scope:reports:read" in body["granted"]
    refused = await resource_api.post("/api/reports", headers=bearer(tokens.access_token))
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"].endswith('scope="reports:write"')


async def test_client_credentials(
    api: OAuthAPI, client_app: ClientApp, resource_api: httpx.AsyncClient
) -> None:
    tokens = await api.client_credentials(client_app, scope="reports:read", resource=RESOURCE)
    claims = unverified_part(tokens.access_token, 1)
    assert claims["sub"] == claims["client_id"] == client_app.client_id
    assert "sid" not in claims
    body = (await resource_api.get("/api/me", headers=bearer(tokens.access_token))).json()
    assert body["id"] == client_app.client_id
    assert body["machine"] is True
    assert body["scopes"] == ["reports:read"]


async def test_session_jwts_and_access_tokens_on_one_app(
    oauth: OAuthServer, api: OAuthAPI, client_app: ClientApp
) -> None:
    session_token, cookie = await api.sign_up()
    session_jwt = (
        await api.http.get(oauth.api_url("/token"), headers=bearer(session_token))
    ).json()["token"]
    tokens = await api.authorization_code(
        client_app, cookie=cookie, scope="openid reports:read", resource=RESOURCE
    )
    app = make_app(oauth, [BearerJWT(), AccessToken(resource=RESOURCE)])
    async with client_for(app) as client:
        jwt_user = (await client.get("/api/me", headers=bearer(session_jwt))).json()
        access_user = (await client.get("/api/me", headers=bearer(tokens.access_token))).json()
        id_token = await client.get("/api/me", headers=bearer(tokens.id_token or ""))
    assert jwt_user["kind"] == "jwt"
    assert access_user["kind"] == "access_token"
    assert jwt_user["id"] == access_user["id"]
    assert id_token.status_code == 401
    assert id_token.json()["error_description"].startswith("this is an OpenID Connect ID token")


async def test_other_tokens_are_refused_with_precise_reasons(
    api: OAuthAPI, client_app: ClientApp, resource_api: httpx.AsyncClient
) -> None:
    _, cookie = await api.sign_up()
    tokens = await api.authorization_code(
        client_app, cookie=cookie, scope="openid reports:read offline_access", resource=RESOURCE
    )
    other = await api.client_credentials(client_app, scope="reports:read", resource=OTHER)
    key = DPoPKey()
    bound_client = await api.register_client(dpop_bound_access_tokens=True)
    bound = await api.client_credentials(
        bound_client, scope="reports:read", resource=RESOURCE, dpop_key=key
    )
    assert bound.token_type == "DPoP"
    assert unverified_part(bound.access_token, 1)["cnf"] == {"jkt": key.jkt}
    assert tokens.id_token is not None
    assert tokens.refresh_token is not None
    cases = {
        tokens.id_token: "this is an OpenID Connect ID token",
        tokens.refresh_token: "this bearer value is not a JWT access token",
        other.access_token: f"aud is '{OTHER}' but the accepted audience is '{RESOURCE}'",
        bound.access_token: "the token is bound to a DPoP key (cnf.jkt)",
    }
    for token, reason in cases.items():
        response = await resource_api.get("/api/me", headers=bearer(token))
        assert response.status_code == 401, reason
        assert response.json()["error_description"].startswith(reason)
        assert token not in response.text


async def test_opaque_tokens_through_introspection(
    oauth: OAuthServer, api: OAuthAPI, client_app: ClientApp
) -> None:
    _, cookie = await api.sign_up()
    tokens = await api.authorization_code(
        client_app, cookie=cookie, scope="openid reports:read offline_access", resource=None
    )
    opaque, refresh_token = tokens.access_token, tokens.refresh_token
    assert len(opaque) == 32
    assert opaque.isalpha()
    assert refresh_token is not None
    # Better Auth answers active only to the client the token was issued to (opaque tokens
    # name no resource another client could be linked to).
    settings = Introspection(
        client_id=client_app.client_id, client_secret=client_app.client_secret, cache_ttl=1
    )
    app = make_app(oauth, [AccessToken(resource=RESOURCE, introspection=settings)])
    kind: Any = app.kinds[0]
    async with client_for(app) as client:
        statuses: list[int] = []

        async def call() -> None:
            statuses.append((await client.get("/api/me", headers=bearer(opaque))).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(call)
        assert statuses == [200] * 100
        assert kind.introspection.status().calls == 1
        body = (await client.get("/api/me", headers=bearer(opaque))).json()
        assert body["kind"] == "access_token"
        assert body["scopes"] == ["offline_access", "openid", "reports:read"]
        assert body["client_id"] == client_app.client_id

        inactive = await client.get("/api/me", headers=bearer("Q" * 32))
        assert inactive.status_code == 401
        assert "says the token is not active" in inactive.json()["error_description"]

        refresh = await client.get("/api/me", headers=bearer(refresh_token))
        assert refresh.status_code == 401  # token_type_hint=access_token: never a refresh token

        revoked = await api.http.post(
            oauth.api_url("/oauth2/revoke"),
            data={"token": opaque, "token_type_hint": "access_token"},
            auth=(client_app.client_id, client_app.client_secret),
        )
        assert revoked.status_code == 200, revoked.text
        await anyio.sleep(1.1)  # the answer's cache_ttl
        after = await client.get("/api/me", headers=bearer(opaque))
        assert after.status_code == 401
        assert kind.introspection.status().calls == 4


async def test_dpop_proofs(
    oauth: OAuthServer, api: OAuthAPI, resource_api: httpx.AsyncClient
) -> None:
    key = DPoPKey()
    client_app = await api.register_client(dpop_bound_access_tokens=True)
    _, cookie = await api.sign_up()
    tokens = await api.authorization_code(
        client_app, cookie=cookie, scope="openid reports:read", resource=RESOURCE, dpop_key=key
    )
    token = tokens.access_token
    url = f"{RESOURCE}/me"

    async def send(proof: str) -> httpx.Response:
        return await resource_api.get(
            "/api/me", headers={"authorization": f"DPoP {token}", "dpop": proof}
        )

    proof = key.proof("GET", url, token=token)
    accepted = await send(proof)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["kind"] == "access_token"
    cases = {
        "replayed": (proof, "the DPoP proof was used before"),
        "wrong htu": (key.proof("GET", f"{API}/api/other", token=token), "the DPoP proof's htu"),
        "another key": (
            DPoPKey().proof("GET", url, token=token),
            "the DPoP proof is signed by another key",
        ),
    }
    for case, (bad, reason) in cases.items():
        response = await send(bad)
        assert response.status_code == 401, case
        assert response.json()["error"] == "invalid_dpop_proof"
        assert response.json()["error_description"].startswith(reason), case
        assert 'DPoP algs="' in response.headers.get_list("www-authenticate")[1]
    assert (await send(key.proof("GET", url, token=token))).status_code == 200


async def test_the_issuer_from_discovery(
    oauth: OAuthServer, api: OAuthAPI, client_app: ClientApp
) -> None:
    metadata = (await api.http.get(oauth.discovery_url)).json()
    assert metadata["issuer"] == oauth.issuer
    assert metadata["jwks_uri"] == oauth.jwks_url
    kind = AccessToken(resource=RESOURCE, discovery_url=oauth.discovery_url)
    tokens = await api.client_credentials(client_app, scope="reports:read", resource=RESOURCE)
    async with client_for(make_app(oauth, [kind])) as client:
        response = await client.get("/api/me", headers=bearer(tokens.access_token))
    assert response.status_code == 200, response.text


async def test_an_mcp_client_calls_a_tool(
    oauth: OAuthServer, api: OAuthAPI, client_app: ClientApp
) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    _, cookie = await api.sign_up()
    tokens = await api.authorization_code(
        client_app, cookie=cookie, scope="openid reports:read", resource=MCP_RESOURCE
    )
    with mcp_example(oauth.url, MCP_RESOURCE, MCP_PORT) as url:
        headers = {"authorization": f"Bearer {tokens.access_token}"}
        async with (
            httpx.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = await session.list_tools()
            assert {tool.name for tool in listed.tools} == {"whoami", "report"}
            result = await session.call_tool("report", {"quarter": "q2"})
            assert not result.isError
            assert result.structuredContent == {"result": 1730}
            who = await session.call_tool("whoami", {})
            assert who.structuredContent is not None
            sub = unverified_part(tokens.access_token, 1)["sub"]
            assert who.structuredContent["subject"] == sub
            assert who.structuredContent["client_id"] == client_app.client_id
        async with httpx.AsyncClient() as plain:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            anonymous = await plain.post(url, json=body)
            assert anonymous.status_code == 401
            challenge = anonymous.headers["www-authenticate"]
            metadata_url = f"http://127.0.0.1:{MCP_PORT}/.well-known/oauth-protected-resource/mcp"
            assert f'resource_metadata="{metadata_url}"' in challenge
            metadata = (await plain.get(metadata_url)).json()
            assert metadata["resource"] == MCP_RESOURCE
            assert metadata["authorization_servers"] == [oauth.issuer]
            other = await api.client_credentials(
                client_app, scope="reports:read", resource=RESOURCE
            )
            wrong = await plain.post(url, json=body, headers=bearer(other.access_token))
            assert wrong.status_code == 401
            unscoped = await api.authorization_code(
                client_app, cookie=cookie, scope="openid", resource=MCP_RESOURCE
            )
            forbidden = await plain.post(url, json=body, headers=bearer(unscoped.access_token))
            assert forbidden.status_code == 403

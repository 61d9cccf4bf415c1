"""AccessToken: OAuth access tokens of Better Auth's provider, through the middleware.

RFC 9068 JWTs next to session JWTs (two issuers, routed by the header typ), the
refusals of ID tokens, session JWTs and other resources' tokens, machine tokens,
the RFC 9728 metadata and its challenge, discovery (RFC 8414), and the
configuration errors. Tokens come from the testing kit's Issuer, keys and
metadata from its loopback JWKSServer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _helpers import principal
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, requires_scope
from starlette_betterauth._access_tokens import (
    header_typ,
    is_access_token,
    issuer_of_discovery_url,
)
from starlette_betterauth.credentials import (
    AccessToken,
    BearerJWT,
    Credential,
    Introspection,
    SessionToken,
)
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer, JWKSServer

pytestmark = pytest.mark.anyio

API = "https://api.example.com"
OTHER = "https://other.example.com"


@requires_scope("reports:read")
async def reports(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def make_app(server: JWKSServer, accept: Sequence[Credential], **options: Any) -> Any:
    app = Starlette(routes=[Route("/me", principal), Route("/mcp/reports", reports)])
    options.setdefault("base_url", server.url)
    return BetterAuthMiddleware(app, accept=accept, **options)


@asynccontextmanager
async def client_for(app: BetterAuthMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=API) as client:
            yield client
    finally:
        await app.aclose()


@pytest.fixture
async def both(server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    """Session JWTs and access tokens on one app."""
    async with client_for(make_app(server, [BearerJWT(), AccessToken(resource=API)])) as client:
        yield client


@pytest.fixture
async def only_access(server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    """Access tokens only, configured with base_url and resource only."""
    async with client_for(make_app(server, [AccessToken(resource=API)])) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_an_access_token_with_base_url_and_resource_only(
    only_access: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.access_token(
        scope="openid reports:read", audience=[API, f"{issuer.oauth_issuer}/oauth2/userinfo"]
    )
    response = await only_access.get("/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "access_token"
    assert body["client_id"] == "test-client"
    assert body["machine"] is False
    assert body["session_id"] is not None
    assert body["scopes"] == ["openid", "reports:read"]
    assert body["granted"] == ["authenticated", "scope:openid", "scope:reports:read"]
    assert (await only_access.get("/mcp/reports", headers=bearer(token))).status_code == 200


async def test_a_client_credentials_token_is_a_machine(
    only_access: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.client_credentials_token(scope="reports:read", audience=API, client_id="cron")
    body = (await only_access.get("/me", headers=bearer(token))).json()
    assert body["id"] == "cron"
    assert body["client_id"] == "cron"
    assert body["machine"] is True
    assert body["session_id"] is None


async def test_missing_scope_is_403_naming_the_scope(
    only_access: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.access_token(scope="openid", audience=API)
    response = await only_access.get("/mcp/reports", headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", '
        "error_description=\"this endpoint needs the 'reports:read' scope\", "
        'scope="reports:read"'
    )


async def test_session_jwts_and_access_tokens_on_one_app(
    both: httpx.AsyncClient, issuer: Issuer
) -> None:
    session_jwt = issuer.token(user_id="u1")
    access = issuer.access_token(scope="reports:read", audience=API, user_id="u1")
    for _ in range(2):  # the second time from the token cache
        assert (await both.get("/me", headers=bearer(session_jwt))).json()["kind"] == "jwt"
        assert (await both.get("/me", headers=bearer(access))).json()["kind"] == "access_token"
    # An access token is not a session JWT even when it names the base URL as issuer.
    lookalike = issuer.access_token(scope="x", audience=issuer.base_url, iss=issuer.base_url)
    response = await both.get("/me", headers=bearer(lookalike))
    assert response.status_code == 401
    assert "iss is" in response.json()["error_description"]


@pytest.mark.parametrize("with_session_jwts", [True, False])
async def test_an_id_token_is_never_an_access_token(
    server: JWKSServer, issuer: Issuer, with_session_jwts: bool
) -> None:
    accept: list[Credential] = [AccessToken(resource=API)]
    if with_session_jwts:
        accept.insert(0, BearerJWT())
    async with client_for(make_app(server, accept)) as client:
        for audience in (API, "test-client"):  # even with the resource as audience
            token = issuer.id_token(aud=audience)
            response = await client.get("/me", headers=bearer(token))
            assert response.status_code == 401
            assert response.json()["error_description"].startswith(
                "this is an OpenID Connect ID token"
            )
            assert response.json()["error"] == "invalid_token"


async def test_other_tokens_are_refused_with_precise_reasons(
    only_access: httpx.AsyncClient, issuer: Issuer
) -> None:
    cases = {
        issuer.token(): "this is a Better Auth session JWT",
        issuer.access_token(scope="x", audience=OTHER): (
            f"aud is '{OTHER}' but the accepted audience is '{API}': the token was issued "
            f"for another resource; ask Better Auth for one with resource='{API}'"
        ),
        issuer.access_token(scope="x", audience=API, iss=issuer.base_url): (
            f"iss is '{issuer.base_url}' but the expected issuer is '{issuer.oauth_issuer}'"
        ),
        issuer.access_token(scope="x", audience=API, header={"typ": "JWT"}): "typ",
        issuer.access_token(scope="x", audience=API, client_id=None): "names no client",
        issuer.access_token(scope="x", audience=API, expires_in=-60): "expired",
        "a" * 32: "not a JWT access token",
    }
    for token, reason in cases.items():
        response = await only_access.get("/me", headers=bearer(token))
        assert response.status_code == 401, reason
        assert reason in response.json()["error_description"]
        assert token not in response.text


async def test_session_tokens_go_to_their_own_kind(server: JWKSServer, issuer: Issuer) -> None:
    session = issuer.session(user_id="u2")
    app = make_app(server, [SessionToken(), AccessToken(resource=API)])
    async with client_for(app) as client:
        response = await client.get("/me", headers=bearer(session.token))
        assert response.json()["kind"] == "session_token"
        token = issuer.access_token(scope="x", audience=API)
        assert (await client.get("/me", headers=bearer(token))).json()["kind"] == "access_token"


def test_the_header_typ_routes_jwts(issuer: Issuer) -> None:
    assert is_access_token(issuer.access_token(scope="x", audience=API))
    assert is_access_token(
        issuer.access_token(scope="x", audience=API, header={"typ": "application/AT+JWT"})
    )
    assert not is_access_token(issuer.token())
    assert not is_access_token(issuer.id_token())
    assert header_typ("not.a.jwt") is None
    assert header_typ("") is None
    assert header_typ("e30.e30.AA") is None


async def test_the_protected_resource_metadata(server: JWKSServer, issuer: Issuer) -> None:
    kind = AccessToken(
        resource=[f"{API}/mcp", "urn:example:api"],
        scopes_supported=["reports:read"],
        resource_name="Reports",
    )
    async with client_for(make_app(server, [kind])) as client:
        response = await client.get("/.well-known/oauth-protected-resource/mcp")
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.json() == {
            "resource": f"{API}/mcp",
            "authorization_servers": [issuer.oauth_issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["reports:read"],
            "resource_name": "Reports",
            "dpop_signing_alg_values_supported": ["ES256", "ES512", "EdDSA", "PS256", "RS256"],
            "dpop_bound_access_tokens_required": False,
        }
        assert (await client.head("/.well-known/oauth-protected-resource/mcp")).status_code == 200
        refused = await client.get("/mcp/reports")
        assert refused.status_code == 401
        assert refused.headers.get_list("www-authenticate")[0] == (
            'Bearer resource_metadata="https://api.example.com/.well-known/'
            'oauth-protected-resource/mcp"'
        )
        # Not a metadata path: an ordinary request, refused without a token.
        assert (await client.get("/.well-known/oauth-protected-resource")).status_code == 401
        posted = await client.post("/.well-known/oauth-protected-resource/mcp")
        assert posted.status_code == 401


async def test_metadata_can_be_switched_off(server: JWKSServer) -> None:
    kind = AccessToken(resource=API, resource_metadata=False, dpop=False)
    async with client_for(make_app(server, [kind])) as client:
        assert (await client.get("/.well-known/oauth-protected-resource")).status_code == 401
        refused = await client.get("/me")
        assert refused.headers["www-authenticate"] == "Bearer"


async def test_discovery_is_read_once_and_gives_the_endpoints(
    server: JWKSServer, issuer: Issuer
) -> None:
    kind = AccessToken(resource=API, discovery_url=server.discovery_url)
    app = make_app(
        server,
        [kind],
        jwks_url=server.url + "/elsewhere/jwks",
        base_url=None,
        issuer=issuer.base_url,
        audience=issuer.base_url,
    )
    async with client_for(app) as client:
        token = issuer.access_token(scope="x", audience=API)
        others = [issuer.access_token(scope="x", audience=API) for _ in range(20)]

        async def call(token: str) -> None:
            assert (await client.get("/me", headers=bearer(token))).status_code == 200

        async with anyio.create_task_group() as group:
            for other in others:
                group.start_soon(call, other)
        await call(token)
        await call(token)
    assert server.discovery_requests == 1
    # The discovered key set, not the middleware's (which does not exist here).
    assert all("/elsewhere/" not in path for path in server.request_paths)


async def test_discovery_failures_are_503_and_retried_later(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    missing = AccessToken(
        resource=API, discovery_url=server.url + "/nope" + "/.well-known/oauth-authorization-server"
    )
    async with client_for(make_app(server, [missing])) as client:
        token = issuer.access_token(scope="x", audience=API)
        first = await client.get("/me", headers=bearer(token))
        assert first.status_code == 503
        assert first.headers["retry-after"]
        second = await client.get("/me", headers=bearer(token))
        assert second.status_code == 503
        assert "discovery is not asked again" in caplog.records[-1].getMessage()
    assert server.requests == 1


async def test_discovery_must_name_the_issuer_of_its_url(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    # RFC 8414 section 3.3: the document fetched for one issuer must name that issuer.
    kind = AccessToken(resource=API, discovery_url=server.discovery_url)
    token = issuer.access_token(scope="x", audience=API)
    issuer.base_url = "https://impostor.example.com"  # what the server's document names now
    async with client_for(make_app(server, [kind])) as client:
        response = await client.get("/me", headers=bearer(token))
        assert response.status_code == 503
        assert (
            "the authorization server metadata names issuer "
            "'https://impostor.example.com/api/auth', not "
            f"'{server.url}/api/auth', the issuer its URL belongs to"
        ) in caplog.text


def test_issuer_of_discovery_url() -> None:
    base = "https://auth.example.com"
    assert issuer_of_discovery_url(f"{base}/api/auth/.well-known/oauth-authorization-server") == (
        f"{base}/api/auth"
    )
    assert issuer_of_discovery_url(f"{base}/api/auth/.well-known/openid-configuration") == (
        f"{base}/api/auth"
    )
    assert issuer_of_discovery_url(f"{base}/.well-known/oauth-authorization-server/api/auth") == (
        f"{base}/api/auth"
    )
    with pytest.raises(ConfigurationError, match="RFC 8414"):
        issuer_of_discovery_url(f"{base}/api/auth/metadata")


@pytest.mark.parametrize(
    ("accept", "options", "message"),
    [
        (
            [
                SessionToken(),
                AccessToken(
                    resource=API, introspection=Introspection(client_id="a", client_secret="b")
                ),
            ],
            {},
            "opaque_prefix",
        ),
        (
            [AccessToken(resource=API)],
            {
                "base_url": None,
                "jwks_url": "https://a.example/jwks",
                "issuer": "x",
                "audience": "y",
            },
            "needs issuer=",
        ),
        ([AccessToken(resource=[])], {}, "audience must be"),
        ([AccessToken(resource=API, opaque_prefix="")], {}, "opaque_prefix must be"),
        (
            [
                AccessToken(
                    resource=API,
                    issuer="https://a.example",
                    discovery_url="https://b.example/.well-known/oauth-authorization-server",
                )
            ],
            {},
            "not the issuer discovery_url",
        ),
    ],
)
def test_configuration_errors_are_named(
    server: JWKSServer, accept: list[Credential], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(server, accept, **options)


def test_introspection_needs_credentials() -> None:
    with pytest.raises(ConfigurationError, match="client_secret"):
        Introspection(client_id="api", client_secret="")
    assert "s3cret" not in repr(Introspection(client_id="api", client_secret="s3cret"))


async def test_the_metadata_document_is_json(server: JWKSServer) -> None:
    async with client_for(make_app(server, [AccessToken(resource=API + "/")])) as client:
        response = await client.get("/.well-known/oauth-protected-resource")
        assert json.loads(response.content)["resource"] == API + "/"

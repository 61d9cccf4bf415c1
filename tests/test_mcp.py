"""starlette_betterauth.mcp: the MCP SDK's token verifier, and the example MCP server.

Tokens come from the testing kit's Issuer and keys from its loopback JWKSServer; the
example server (``examples/mcp_server.py``) runs as a process and is called with the
SDK's own client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from _oauth_server import free_port, mcp_example
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from starlette_betterauth.credentials import Introspection
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.mcp import BetterAuthTokenVerifier
from starlette_betterauth.testing import DPoPKey, Issuer, JWKSServer

pytestmark = pytest.mark.anyio

RESOURCE = "https://mcp.example.com/mcp"


@pytest.fixture
async def verifier(server: JWKSServer) -> AsyncIterator[BetterAuthTokenVerifier]:
    verifier = BetterAuthTokenVerifier(base_url=server.url, resource=RESOURCE)
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def test_an_access_token_becomes_the_sdks_access_token(
    verifier: BetterAuthTokenVerifier, issuer: Issuer
) -> None:
    token = issuer.access_token(scope="reports:read openid", audience=RESOURCE, user_id="u1")
    verified = await verifier.verify_token(token)
    assert verified is not None
    assert verified.token == token
    assert verified.client_id == "test-client"
    assert verified.scopes == ["openid", "reports:read"]
    assert verified.resource == RESOURCE
    assert verified.subject == "u1"
    assert verified.claims is not None
    assert verified.claims["iss"] == issuer.oauth_issuer
    assert isinstance(verified.expires_at, int)
    assert await verifier.verify_token(token) == verified  # from the token cache


async def test_refused_tokens_are_none_with_the_reason_logged(
    verifier: BetterAuthTokenVerifier, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    refused = {
        issuer.access_token(scope="x", audience="https://other.example.com"): "InvalidAudience",
        issuer.id_token(): "TokenTypeError",
        issuer.token(): "TokenTypeError",
        issuer.access_token(scope="x", audience=RESOURCE, dpop_key=DPoPKey()): "DPoP-bound",
        "Q" * 32: "OpaqueTokenError",
    }
    with caplog.at_level(logging.INFO, logger="starlette_betterauth"):
        for token, reason in refused.items():
            assert await verifier.verify_token(token) is None
            assert reason in caplog.records[-1].getMessage()
            assert token not in caplog.text


async def test_an_unreachable_server_refuses_with_a_warning(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    verifier = BetterAuthTokenVerifier(base_url=f"http://127.0.0.1:{port}", resource=RESOURCE)
    try:
        with caplog.at_level(logging.WARNING, logger="starlette_betterauth"):
            assert (
                await verifier.verify_token(issuer.access_token(scope="x", audience=RESOURCE))
                is None
            )
        assert "Better Auth unavailable" in caplog.text
    finally:
        await verifier.aclose()


async def test_opaque_tokens_through_introspection(server: JWKSServer, issuer: Issuer) -> None:
    client_id, secret = issuer.register_client()
    verifier = BetterAuthTokenVerifier(
        base_url=server.url,
        resource=RESOURCE,
        introspection=Introspection(client_id=client_id, client_secret=secret),
    )
    try:
        token = issuer.opaque_access_token(scope="reports:read", client_id="cron")
        verified = await verifier.verify_token(token)
        assert verified is not None
        assert (verified.client_id, verified.subject) == ("cron", "cron")
    finally:
        await verifier.aclose()


async def test_auth_settings_name_better_auth_and_the_resource(
    verifier: BetterAuthTokenVerifier, issuer: Issuer
) -> None:
    settings = verifier.auth_settings(required_scopes=["reports:read"])
    assert str(settings.issuer_url) == issuer.oauth_issuer
    assert str(settings.resource_server_url) == RESOURCE
    assert settings.required_scopes == ["reports:read"]
    assert settings.validate_token_resource is True


def test_a_missing_server_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BETTER_AUTH_URL", raising=False)
    with pytest.raises(ConfigurationError, match="no Better Auth server configured"):
        BetterAuthTokenVerifier(resource=RESOURCE)
    with pytest.raises(ConfigurationError, match="AccessToken needs issuer="):
        BetterAuthTokenVerifier(resource=RESOURCE, jwks_url="https://auth.example.com/jwks")


async def test_the_example_mcp_server(server: JWKSServer, issuer: Issuer) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    token = issuer.access_token(scope="reports:read", audience=resource, user_id="ada")
    with mcp_example(server.url, resource, port) as url:
        headers = {"authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(headers=headers, timeout=30) as http,
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("report", {"quarter": "q1"})
            assert result.structuredContent == {"result": 1250}
            who = await session.call_tool("whoami", {})
            assert who.structuredContent == {
                "subject": "ada",
                "client_id": "test-client",
                "scopes": ["reports:read"],
                "machine": False,
            }
        async with httpx.AsyncClient() as plain:
            request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            anonymous = await plain.post(url, json=request)
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"].endswith(
                f'resource_metadata="http://127.0.0.1:{port}/.well-known/'
                'oauth-protected-resource/mcp"'
            )
            unscoped = issuer.access_token(scope="openid", audience=resource)
            forbidden = await plain.post(
                url, json=request, headers={"authorization": f"Bearer {unscoped}"}
            )
            assert forbidden.status_code == 403

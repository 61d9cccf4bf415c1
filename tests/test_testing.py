"""The public testing kit: tokens shaped like Better Auth's, the pytest fixtures, the transport."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import httpx
import pytest
from _helpers import asgi_client, bearer, guarded_app
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import TokenVerifier, requires_scope
from starlette_betterauth.testing import ALGORITHMS, Issuer, JWKSServer, SigningKey, jwks_transport

pytestmark = pytest.mark.anyio


async def test_pytest_fixtures_serve_a_verifiable_token(
    betterauth_issuer: Issuer, betterauth_jwks_server: JWKSServer
) -> None:
    assert betterauth_issuer.base_url == betterauth_jwks_server.url
    verifier = TokenVerifier.for_server(betterauth_jwks_server.url)
    claims = await verifier.verify(betterauth_issuer.token(role="admin", user_id="u"))
    assert (claims["sub"], claims["id"], claims["role"]) == ("u", "u", "admin")
    assert betterauth_jwks_server.requests == 1


def test_tokens_are_shaped_like_better_auths(betterauth_issuer: Issuer) -> None:
    token = betterauth_issuer.token(email="e@example.com")
    header, payload, _ = token.split(".")
    decoded_header = json.loads(_pad(header))
    claims = betterauth_issuer.claims()
    assert decoded_header == {"alg": "EdDSA", "kid": betterauth_issuer.current_key.kid}
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iss"] == claims["aud"] == betterauth_issuer.base_url
    assert claims["sub"] == claims["id"]
    assert set(claims) >= {"name", "email", "emailVerified", "createdAt", "role", "banned"}
    assert "role" not in betterauth_issuer.claims(role=None)
    assert len(betterauth_issuer.current_key.kid) == 32
    assert payload


def _pad(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(_pad(header)), json.loads(_pad(payload))


RESOURCE = "https://api.example.com"


def test_access_tokens_are_shaped_like_better_auths_oauth_tokens() -> None:
    issuer = Issuer("https://auth.example.com")
    header, claims = _decode(issuer.access_token(scope="openid reports:read", audience=RESOURCE))
    assert header == {"alg": "EdDSA", "kid": issuer.current_key.kid, "typ": "at+jwt"}
    names = "iss aud sub client_id azp sid scope iat exp jti"
    assert claims.keys() == set(names.split())
    assert claims["iss"] == issuer.oauth_issuer == "https://auth.example.com/api/auth"
    assert claims["aud"] == RESOURCE
    assert claims["scope"] == "openid reports:read"
    assert claims["client_id"] == claims["azp"]
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize(
    ("scope", "expected"),
    [("a b", "a b"), (["a", "b"], "a b"), (("a",), "a"), ("", ""), ([], "")],
)
def test_access_token_scope_is_space_separated(scope: str | list[str], expected: str) -> None:
    _, claims = _decode(Issuer().access_token(scope=scope, audience=RESOURCE))
    assert claims["scope"] == expected


def test_access_token_claims_can_be_overridden_and_left_out() -> None:
    issuer = Issuer()
    token = issuer.access_token(
        scope=None,
        audience=[RESOURCE, "https://other.example"],
        user_id="u1",
        client_id="c1",
        sid=None,
        iss=issuer.base_url,
        custom=7,
    )
    _, claims = _decode(token)
    assert "scope" not in claims
    assert "sid" not in claims
    assert claims["aud"] == [RESOURCE, "https://other.example"]
    assert (claims["sub"], claims["client_id"], claims["azp"]) == ("u1", "c1", "c1")
    assert claims["iss"] == issuer.base_url
    assert claims["custom"] == 7


@requires_scope("reports:read")
async def _reports(request: Request) -> JSONResponse:
    return JSONResponse({"scopes": sorted(request.state.user.scopes)})


async def test_access_token_passes_a_middleware_configured_for_the_resource(
    issuer: Issuer, server: JWKSServer
) -> None:
    app = guarded_app(
        [Route("/reports", _reports)],
        base_url=server.url,
        issuer=issuer.oauth_issuer,
        audience=RESOURCE,
    )
    async with asgi_client(app) as client:
        token = issuer.access_token(scope="openid reports:read", audience=RESOURCE)
        granted = await client.get("/reports", headers=bearer(token))
        token = issuer.access_token(scope="openid", audience=RESOURCE)
        refused = await client.get("/reports", headers=bearer(token))
    assert granted.json() == {"scopes": ["openid", "reports:read"]}
    assert refused.status_code == 403


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_public_jwks_have_alg_and_kid_and_no_private_members(alg: str) -> None:
    jwk = SigningKey(alg).public_jwk
    assert jwk["alg"] == alg
    assert not {"d", "p", "q"} & jwk.keys()


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="alg must be one of"):
        SigningKey("HS256")


async def test_transport_serves_the_key_set_and_404s_elsewhere() -> None:
    issuer = Issuer("https://auth.example")
    async with httpx.AsyncClient(transport=jwks_transport(issuer)) as client:
        keys = (await client.get("https://auth.example/api/auth/jwks")).json()["keys"]
        missing = await client.get("https://auth.example/other")
    assert [k["kid"] for k in keys] == [issuer.current_key.kid]
    assert missing.status_code == 404


def test_rotate_and_remove_key() -> None:
    issuer = Issuer()
    first = issuer.current_key.kid
    second = issuer.rotate().kid
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [first, second]
    issuer.remove_key(first)
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [second]


def _get_keep_alive(connection: socket.socket, path: str) -> tuple[bytes, bytes]:
    """Send one HTTP/1.1 GET on ``connection`` (left open) and read its status line and body."""
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    reader = connection.makefile("rb")
    status = reader.readline().strip()
    length = 0
    while (line := reader.readline().strip()) != b"":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def test_stop_hangs_up_on_keep_alive_connections(issuer: Issuer) -> None:
    with JWKSServer(issuer) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            status, body = _get_keep_alive(connection, server.path)
            assert status == b"HTTP/1.1 200 OK"
            assert json.loads(body) == issuer.jwks()
            server.stop()
            # The end of the stream, not an answer and not a wait for the timeout.
            assert connection.recv(1) == b""
        assert server.requests == 1


def test_a_stopped_server_starts_again(issuer: Issuer) -> None:
    server = JWKSServer(issuer).start()
    server.stop()
    with server:
        response = httpx.get(server.jwks_url)
    assert response.json() == issuer.jwks()
    assert server.requests == 1

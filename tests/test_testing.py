"""The public testing kit: tokens shaped like Better Auth's, the pytest fixtures, the transport."""

from __future__ import annotations

import base64
import json
import socket

import httpx
import pytest

from starlette_betterauth import TokenVerifier
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

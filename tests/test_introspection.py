"""Opaque access tokens checked by introspection (RFC 7662), against the loopback server.

One call for many concurrent requests, answers kept until exp or cache_ttl,
refusals kept briefly, faults answered 503 with Retry-After, and the answers a
resource server must not trust (another issuer, audience or token type).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _helpers import principal
from starlette.applications import Starlette
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware
from starlette_betterauth._introspection import IntrospectionClient
from starlette_betterauth._responses import SERVICE_UNAVAILABLE_MESSAGE
from starlette_betterauth.credentials import AccessToken, Introspection, SessionToken
from starlette_betterauth.errors import InactiveTokenError, IntrospectionError
from starlette_betterauth.testing import DPoPKey, Issuer, JWKSServer

pytestmark = pytest.mark.anyio

API = "https://api.example.com"


@pytest.fixture
def credentials(issuer: Issuer) -> tuple[str, str]:
    return issuer.register_client("reports-api", "reports-secret")


def introspecting(credentials: tuple[str, str], **options: Any) -> AccessToken:
    client_id, secret = credentials
    settings = Introspection(client_id=client_id, client_secret=secret, **options)
    return AccessToken(resource=API, introspection=settings)


@asynccontextmanager
async def client_for(
    server: JWKSServer, *accept: Any, events: list[Any] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    on_event = (
        (lambda name, data: events.append((name, dict(data)))) if events is not None else None
    )
    app = BetterAuthMiddleware(
        Starlette(routes=[Route("/me", principal)]),
        base_url=server.url,
        accept=list(accept),
        on_event=on_event,
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=API) as client:
            yield client
    finally:
        await app.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_one_call_for_a_hundred_concurrent_requests(
    server: JWKSServer, issuer: Issuer, credentials: tuple[str, str]
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1")
    server.introspection_delay = 0.2  # all of them arrive while the call is in flight
    statuses: list[int] = []
    events: list[Any] = []
    async with client_for(server, introspecting(credentials), events=events) as client:

        async def call() -> None:
            response = await client.get("/me", headers=bearer(token))
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(call)
        body = (await client.get("/me", headers=bearer(token))).json()
    assert statuses == [200] * 100
    assert server.introspection_requests == 1
    assert body["kind"] == "access_token"
    assert body["id"] == "u1"
    assert body["scopes"] == ["reports:read"]
    lookups = [data for name, data in events if name == "introspection"]
    assert len(lookups) == 101
    assert sum(data["shared"] for data in lookups) == 99
    assert lookups[-1]["cached"] is True


async def test_inactive_tokens_are_401_and_their_refusal_is_kept(
    server: JWKSServer, credentials: tuple[str, str]
) -> None:
    async with client_for(server, introspecting(credentials)) as client:
        for _ in range(3):
            response = await client.get("/me", headers=bearer("Q" * 32))
            assert response.status_code == 401
            assert response.json()["error_description"].startswith(
                "the authorization server says the token is not active"
            )
    assert server.introspection_requests == 1


async def test_a_revoked_token_is_seen_within_the_cache_ttl(
    server: JWKSServer, issuer: Issuer, credentials: tuple[str, str]
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1")
    async with client_for(server, introspecting(credentials, cache_ttl=0.2)) as client:
        assert (await client.get("/me", headers=bearer(token))).status_code == 200
        issuer.revoke_access_token(token)
        assert (await client.get("/me", headers=bearer(token))).status_code == 200  # cached
        await anyio.sleep(0.3)
        assert (await client.get("/me", headers=bearer(token))).status_code == 401
    assert server.introspection_requests == 2


async def test_a_machine_token_without_sub_is_its_client(
    server: JWKSServer, issuer: Issuer, credentials: tuple[str, str]
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", client_id="cron")
    async with client_for(server, introspecting(credentials)) as client:
        body = (await client.get("/me", headers=bearer(token))).json()
    assert body["id"] == "cron"
    assert body["machine"] is True


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"token_type": "refresh_token"}, "of type 'refresh_token', not an access token"),
        ({"iss": "https://impostor.example.com"}, "introspection says iss is"),
        ({"aud": "https://other.example.com"}, "the token was issued for"),
        ({"exp": 1000}, "the token has expired"),
        ({"sub": None, "client_id": None}, "names no sub and no client_id"),
        ({"sub": 5}, "sub is not a non-empty string"),
    ],
)
async def test_answers_that_must_not_be_trusted(
    server: JWKSServer,
    issuer: Issuer,
    credentials: tuple[str, str],
    members: dict[str, Any],
    reason: str,
) -> None:
    answer = {
        "active": True,
        "iss": issuer.oauth_issuer,
        "sub": "u1",
        "client_id": "c",
        "exp": time.time() + 60,
        **members,
    }
    present = {name: value for name, value in answer.items() if value is not None}
    server.introspection_body = json.dumps(present).encode()
    async with client_for(server, introspecting(credentials)) as client:
        response = await client.get("/me", headers=bearer("Q" * 32))
    assert response.status_code == 401
    assert reason in response.json()["error_description"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason", "retry_after"),
    [
        (503, None, {"Retry-After": "7"}, "introspection answered HTTP 503", "7"),
        (429, None, {}, "introspection answered HTTP 429", "1"),
        (401, None, {}, "check the client_id and client_secret", "5"),
        (200, b"<html>", {}, "the introspection answer is not JSON", "5"),
        (200, b'{"active":"yes"}', {}, 'a boolean "active"', "5"),
    ],
)
async def test_faults_are_503_with_retry_after(
    server: JWKSServer,
    issuer: Issuer,
    credentials: tuple[str, str],
    status: int,
    body: bytes | None,
    headers: dict[str, str],
    reason: str,
    retry_after: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1")
    server.introspection_status = status
    server.introspection_body = body
    server.introspection_headers = headers
    async with client_for(server, introspecting(credentials)) as client:
        response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 503
    assert response.json()["error_description"] == SERVICE_UNAVAILABLE_MESSAGE
    assert reason in caplog.text  # the why is for the operator's log
    assert response.headers["retry-after"] == retry_after
    assert token not in response.text


async def test_wrong_client_credentials_are_a_503(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1")
    async with client_for(server, introspecting(("reports-api", "wrong"))) as client:
        response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 503
    assert "check the client_id and client_secret" in caplog.text


async def test_a_slow_introspection_endpoint_is_a_503(
    server: JWKSServer,
    issuer: Issuer,
    credentials: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1")
    server.introspection_delay = 1.0
    async with client_for(server, introspecting(credentials, timeout=0.2)) as client:
        response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 503
    assert "did not answer within 0.2 s" in caplog.text


async def test_opaque_tokens_with_a_prefix_next_to_session_tokens(
    server: JWKSServer, issuer: Issuer, credentials: tuple[str, str]
) -> None:
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1", prefix="at_")
    assert token.startswith("at_")
    session = issuer.session(user_id="u2")
    client_id, secret = credentials
    kind = AccessToken(
        resource=API,
        introspection=Introspection(client_id=client_id, client_secret=secret),
        opaque_prefix="at_",
    )
    for accept in ([SessionToken(), kind], [kind, SessionToken()]):
        async with client_for(server, *accept) as client:
            assert (await client.get("/me", headers=bearer(token))).json()["kind"] == (
                "access_token"
            )
            assert (await client.get("/me", headers=bearer(session.token))).json()["kind"] == (
                "session_token"
            )


async def test_a_dpop_bound_opaque_token_needs_its_proof(
    server: JWKSServer, issuer: Issuer, credentials: tuple[str, str]
) -> None:
    key = DPoPKey()
    token = issuer.opaque_access_token(scope="reports:read", user_id="u1", dpop_key=key)
    async with client_for(server, introspecting(credentials)) as client:
        refused = await client.get("/me", headers=bearer(token))
        assert refused.status_code == 401
        assert "cnf.jkt" in refused.json()["error_description"]
        headers = {
            "authorization": f"DPoP {token}",
            "dpop": key.proof("GET", f"{API}/me", token=token),
        }
        assert (await client.get("/me", headers=headers)).status_code == 200
    assert server.introspection_requests == 1


async def test_the_client_refuses_values_that_cannot_be_tokens(
    server: JWKSServer, credentials: tuple[str, str]
) -> None:
    client: IntrospectionClient[Any] = IntrospectionClient(
        server.introspection_url,
        client_id=credentials[0],
        client_secret=credentials[1],
        issuer=None,
        audiences=None,
        build=lambda claims, exp: claims,
    )
    try:
        for value in ("", "x" * 5000, "é" * 32):
            with pytest.raises(InactiveTokenError, match="cannot be an opaque access token"):
                await client.introspect(value)
        server.introspection_status = 500
        with pytest.raises(IntrospectionError) as failed:
            await client.introspect("Q" * 32)
        assert failed.value.retry_after == 1.0
        assert client.status().failures == 1
    finally:
        await client.aclose()
    assert server.introspection_requests == 1

"""Credential kinds through the middleware, against the testing kit's loopback server.

BearerJWT, SessionCookie and SessionToken: which kind answers a request, local
verification of the JWKS-signed cookie cache, get-session lookups and their
caching, cross-site checks for cookies, and the refusals of each.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _serving import websocket_session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from starlette_betterauth import BetterAuthMiddleware, requires_role
from starlette_betterauth.credentials import BearerJWT, Credential, SessionCookie, SessionToken
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer, JWKSServer, TestSession, b64url

pytestmark = pytest.mark.anyio


async def me(request: Request) -> JSONResponse:
    user = request.state.user
    return JSONResponse(
        {
            "id": user.id,
            "email": user.email,
            "kind": user.kind,
            "session_id": user.session_id,
            "roles": sorted(user.roles),
            "expires_at": user.expires_at,
        }
    )


@requires_role("admin")
async def admin(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.user.identity)
    await websocket.close()


def make_app(
    server: JWKSServer, accept: Sequence[Credential], **options: Any
) -> BetterAuthMiddleware:
    app = Starlette(
        routes=[
            Route("/me", me, methods=["GET", "POST", "DELETE"]),
            Route("/admin", admin),
            WebSocketRoute("/ws", echo),
        ]
    )
    return BetterAuthMiddleware(app, base_url=server.url, accept=accept, **options)


@pytest.fixture
async def session(issuer: Issuer) -> TestSession:
    return issuer.session(email="ada@example.com", role="user,admin")


@asynccontextmanager
async def client_for(app: BetterAuthMiddleware, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``; the middleware's own HTTP clients are closed afterwards."""
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), **kwargs) as client:
            yield client
    finally:
        await app.aclose()


@pytest.fixture
def cookie_app(server: JWKSServer) -> BetterAuthMiddleware:
    return make_app(
        server, [SessionCookie(cache_ttl=0.3), SessionToken(cache_ttl=0.3), BearerJWT()]
    )


# -- session cookies ---------------------------------------------------------------


async def test_fresh_session_data_cookie_is_verified_locally(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    async with client_for(
        cookie_app, base_url=server.url, cookies=issuer.session_cookies(session)
    ) as client:
        for _ in range(3):
            response = await client.get("/me")
            assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == session.user_id
    assert body["email"] == "ada@example.com"
    assert body["kind"] == "session_cookie"
    assert body["session_id"] == session.id
    assert body["roles"] == ["admin", "user"]
    assert server.session_requests == 0


async def test_session_data_iss_is_the_base_url_whatever_the_jwt_issuer(
    server: JWKSServer, issuer: Issuer, session: TestSession
) -> None:
    # Better Auth gives its JWTs jwt.issuer, and its cookie cache its baseURL.
    app = make_app(server, [SessionCookie(), BearerJWT()], issuer="https://id.example")

    def cookie(jar: dict[str, str]) -> dict[str, str]:
        return {"cookie": "; ".join(f"{name}={value}" for name, value in jar.items())}

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    async with client_for(app, base_url=server.url) as client:
        good = cookie(issuer.session_cookies(session))
        assert (await client.get("/me", headers=good)).status_code == 200
        other = cookie(issuer.session_data_cookie(session, iss="https://id.example"))
        assert (await client.get("/me", headers=other)).status_code == 401
        jwt = issuer.token(iss="https://id.example")
        assert (await client.get("/me", headers=bearer(jwt))).status_code == 200
        assert (await client.get("/me", headers=bearer(issuer.token()))).status_code == 401
    assert server.session_requests == 0


async def test_session_token_cookie_alone_goes_through_get_session(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    cookies = issuer.session_cookies(session, session_data=False)
    async with client_for(cookie_app, base_url=server.url, cookies=cookies) as client:
        for _ in range(5):
            response = await client.get("/me")
            assert response.status_code == 200, response.text
    assert response.json()["kind"] == "session_cookie"
    assert response.json()["session_id"] == session.id
    assert server.session_requests == 1
    sent = server.session_request_headers[-1]
    assert set(sent) <= {"host", "accept", "accept-encoding", "user-agent", "cookie", "connection"}
    assert sent["cookie"].startswith("better-auth.session_token=")


async def test_expired_session_data_falls_back_to_get_session(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    cookies = issuer.session_cookies(session, session_data=False)
    cookies.update(issuer.session_data_cookie(session, issued_at=time.time() - 600))
    async with client_for(cookie_app, base_url=server.url, cookies=cookies) as client:
        assert (await client.get("/me")).status_code == 200
    assert server.session_requests == 1


async def test_chunked_and_secure_cookies(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    cookies = issuer.session_cookies(session, secure=True, chunk_size=200)
    assert sum(".session_data." in name for name in cookies) > 1
    async with client_for(cookie_app, base_url=server.url, cookies=cookies) as client:
        assert (await client.get("/me")).status_code == 200
    assert server.session_requests == 0


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        (lambda i, s, o: i.session_data_cookie(s, sid=o.token), "another session"),
        (lambda i, s, o: i.session_data_cookie(s, aud="https://elsewhere"), "aud is"),
        (
            lambda i, s, o: {
                k: v[:-4] + ("AAAA" if not v.endswith("AAAA") else "BBBB")
                for k, v in i.session_data_cookie(s).items()
            },
            "signature",
        ),
    ],
)
async def test_forged_session_data_is_refused(
    server: JWKSServer,
    issuer: Issuer,
    session: TestSession,
    cookie_app: BetterAuthMiddleware,
    mint: Any,
    reason: str,
) -> None:
    other = issuer.session(email="eve@example.com")
    cookies = issuer.session_cookies(session, session_data=False)
    cookies.update(mint(issuer, session, other))
    async with client_for(cookie_app, base_url=server.url, cookies=cookies) as client:
        response = await client.get("/me")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert reason in response.json()["error_description"]
    for value in cookies.values():
        assert value not in response.text
    assert server.session_requests == 0


@pytest.mark.parametrize(
    "cache",
    [
        "eyJzZXNzaW9uIjp7fX0",  # the compact strategy: base64url JSON and an HMAC
        "a.b.c.d.e",  # the jwe strategy: five segments
        "JWT",  # the HS256 jwt strategy: a JWT without the cookie cache's typ
    ],
)
async def test_a_cookie_cache_signed_with_the_secret_is_left_to_get_session(
    server: JWKSServer,
    issuer: Issuer,
    session: TestSession,
    cookie_app: BetterAuthMiddleware,
    cache: str,
) -> None:
    cookies = issuer.session_cookies(session, session_data=False)
    if cache == "JWT":
        cache = ".".join([b64url({"alg": "HS256", "typ": "JWT"}), b64url({"sub": "x"}), "c2ln"])
    cookies["better-auth.session_data"] = cache
    async with client_for(cookie_app, base_url=server.url, cookies=cookies) as client:
        response = await client.get("/me")
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "session_cookie"
    assert server.session_requests == 1


async def test_cross_site_unsafe_cookie_requests_are_refused(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    cookies = issuer.session_cookies(session)
    async with client_for(cookie_app, base_url=server.url, cookies=cookies) as client:
        foreign = await client.post("/me", headers={"origin": "https://evil.example"})
        same = await client.post("/me", headers={"origin": server.url})
        by_referer = await client.delete("/me", headers={"referer": server.url + "/page"})
        nothing = await client.post("/me")
        null = await client.post("/me", headers={"origin": "null"})
        safe = await client.get("/me", headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert "untrusted origin" in foreign.json()["error_description"]
    assert foreign.headers["www-authenticate"] == "Bearer"
    assert (same.status_code, by_referer.status_code, safe.status_code) == (200, 200, 200)
    assert nothing.status_code == 403
    assert null.status_code == 403


async def test_bearer_requests_need_no_origin(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    async with client_for(cookie_app, base_url=server.url) as client:
        for token in (issuer.token(), session.token, session.signed_token):
            response = await client.post(
                "/me",
                headers={"origin": "https://evil.example", "authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text


async def test_configured_trusted_origins(
    server: JWKSServer, issuer: Issuer, session: TestSession
) -> None:
    app = make_app(server, [SessionCookie(trusted_origins=["https://app.example.com:443/x"])])
    cookies = issuer.session_cookies(session)
    async with client_for(app, base_url=server.url, cookies=cookies) as client:
        ok = await client.post("/me", headers={"origin": "https://app.example.com"})
        base = await client.post("/me", headers={"origin": server.url})
    assert (ok.status_code, base.status_code) == (200, 403)


async def test_cookie_websocket_from_a_foreign_origin_is_refused(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    cookie = "; ".join(f"{k}={v}" for k, v in issuer.session_cookies(session).items())
    refused = await websocket_session(
        cookie_app, "/ws", headers=[(b"cookie", cookie.encode()), (b"origin", b"https://x.test")]
    )
    assert refused[0]["type"] == "websocket.http.response.start"
    assert refused[0]["status"] == 403
    accepted = await websocket_session(
        cookie_app, "/ws", headers=[(b"cookie", cookie.encode()), (b"origin", server.url.encode())]
    )
    assert [m["type"] for m in accepted][:2] == ["websocket.accept", "websocket.send"]
    assert accepted[1]["text"] == session.user_id
    await cookie_app.aclose()


# -- session tokens ----------------------------------------------------------------


async def test_session_token_raw_and_signed(
    server: JWKSServer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    async with client_for(cookie_app, base_url=server.url) as client:
        for token in (session.token, session.signed_token):
            response = await client.get("/me", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            assert response.json()["kind"] == "session_token"
            assert response.json()["session_id"] == session.id
            assert response.json()["expires_at"] == pytest.approx(session.expires_at, abs=1)


async def test_one_get_session_call_for_many_concurrent_requests(
    server: JWKSServer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    server.session_delay = 0.2
    statuses: list[int] = []
    async with client_for(cookie_app, base_url=server.url) as client:

        async def call() -> None:
            response = await client.get("/me", headers={"authorization": f"Bearer {session.token}"})
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(100):
                group.start_soon(call)
    assert statuses == [200] * 100
    assert server.session_requests == 1


async def test_sign_out_and_ban_are_seen_within_the_cache_ttl(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    other = issuer.session(email="bob@example.com")
    async with client_for(cookie_app, base_url=server.url) as client:
        for token in (session.token, other.token):
            response = await client.get("/me", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 200
        issuer.revoke_session(session)
        issuer.ban(other.user_id)
        await anyio.sleep(0.35)  # cache_ttl=0.3
        signed_out = await client.get("/me", headers={"authorization": f"Bearer {session.token}"})
        banned = await client.get("/me", headers={"authorization": f"Bearer {other.token}"})
    assert signed_out.status_code == 401
    assert "unknown, expired or signed out" in signed_out.json()["error_description"]
    assert banned.status_code in (401, 403)  # revoked with the ban, or refused as banned


async def test_banned_session_user_gets_403(server: JWKSServer, issuer: Issuer) -> None:
    banned = issuer.session(banned=True)
    app = make_app(server, [SessionToken()])
    async with client_for(app, base_url=server.url) as client:
        response = await client.get("/me", headers={"authorization": f"Bearer {banned.token}"})
    assert response.status_code == 403
    assert response.json()["error_description"] == "this user is banned"


async def test_role_guards_answer_as_for_jwts(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    plain = issuer.session(role="user")
    async with client_for(cookie_app, base_url=server.url) as client:
        allowed = await client.get("/admin", headers={"authorization": f"Bearer {session.token}"})
        denied = await client.get("/admin", headers={"authorization": f"Bearer {plain.token}"})
    assert allowed.status_code == 200
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]


async def test_get_session_down_is_503_while_jwts_still_pass(
    server: JWKSServer, issuer: Issuer, session: TestSession, cookie_app: BetterAuthMiddleware
) -> None:
    jwt = issuer.token()
    async with client_for(cookie_app, base_url=server.url) as client:
        assert (
            await client.get("/me", headers={"authorization": f"Bearer {jwt}"})
        ).status_code == 200
        server.session_status = 503
        server.session_headers = {"Retry-After": "7"}
        down = await client.get("/me", headers={"authorization": f"Bearer {session.token}"})
        again = await client.get("/me", headers={"authorization": f"Bearer {jwt}"})
    assert down.status_code == 503
    assert down.headers["retry-after"] == "7"
    assert session.token not in down.text
    assert again.status_code == 200


# -- which kind answers ------------------------------------------------------------


@pytest.mark.parametrize("order", ["jwt-first", "session-first"])
async def test_bearer_values_go_to_the_kind_their_shape_names(
    server: JWKSServer, issuer: Issuer, session: TestSession, order: str
) -> None:
    kinds: list[Credential] = [BearerJWT(), SessionToken()]
    if order == "session-first":
        kinds.reverse()
    app = make_app(server, kinds)
    async with client_for(app, base_url=server.url) as client:
        jwt = await client.get("/me", headers={"authorization": f"Bearer {issuer.token()}"})
        opaque = await client.get("/me", headers={"authorization": f"Bearer {session.token}"})
    assert (jwt.json()["kind"], opaque.json()["kind"]) == ("jwt", "session_token")


async def test_session_token_where_only_jwts_are_accepted(
    server: JWKSServer, session: TestSession
) -> None:
    app = make_app(server, [BearerJWT()])
    async with client_for(app, base_url=server.url) as client:
        for token in (session.token, session.signed_token):
            response = await client.get("/me", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 401
            reason = response.json()["error_description"]
            assert "session token, not a JWT" in reason
            assert "SessionToken()" in reason
    assert server.session_requests == 0


async def test_the_first_present_kind_decides(
    server: JWKSServer, issuer: Issuer, session: TestSession
) -> None:
    app = make_app(server, [SessionCookie(), BearerJWT()])
    cookies = issuer.session_cookies(session)
    async with client_for(app, base_url=server.url, cookies=cookies) as client:
        both = await client.get("/me", headers={"authorization": "Bearer not.a.jwt"})
    assert both.json()["kind"] == "session_cookie"


async def test_a_failing_credential_is_never_anonymous(
    server: JWKSServer, issuer: Issuer, session: TestSession
) -> None:
    app = make_app(server, [SessionCookie(), BearerJWT()], optional=True)
    issuer.revoke_session(session)
    cookies = issuer.session_cookies(session, session_data=False)
    async with client_for(app, base_url=server.url, cookies=cookies) as client:
        assert (await client.get("/me")).status_code == 401


@pytest.mark.parametrize(
    ("accept", "message"),
    [
        ([], "accept needs at least one credential kind"),
        ([BearerJWT(), BearerJWT()], "accept lists BearerJWT twice"),
        (["jwt"], "accept takes credential kinds"),
        ([SessionCookie(trusted_origins="https://a.example")], "takes a list of origins"),
        ([SessionCookie(trusted_origins=["ftp://a.example"])], "must be an http(s) URL"),
        ([SessionCookie(cookie_prefix="bad prefix")], "cookie_prefix must be"),
        ([SessionToken(cache_ttl=-1)], "cache_ttl must be"),
    ],
)
def test_bad_kinds_are_configuration_errors(
    server: JWKSServer, accept: list[Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        make_app(server, accept)


def test_session_kinds_need_a_server_location() -> None:
    with pytest.raises(ConfigurationError, match="SessionToken needs get_session_url="):
        BetterAuthMiddleware(
            Starlette(),
            jwks_url="https://auth.example/jwks",
            issuer="https://auth.example",
            audience="https://auth.example",
            accept=[SessionToken()],
        )

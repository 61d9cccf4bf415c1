"""BetterAuthMiddleware through real HTTP (httpx.ASGITransport) and a real loopback JWKS."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from _helpers import asgi_client, bearer, guarded_app
from _serving import websocket_session
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, TokenVerifier
from starlette_betterauth.errors import BetterAuthError, ConfigurationError
from starlette_betterauth.testing import ALGORITHMS, Issuer, JWKSServer

pytestmark = pytest.mark.anyio


async def whoami(request: Request) -> JSONResponse:
    user = request.state.user
    if user is None:
        return JSONResponse({"anonymous": True, "authenticated": request.user.is_authenticated})
    assert isinstance(user, BetterAuthUser)
    assert request.user is user
    return JSONResponse(
        {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "roles": sorted(user.roles),
            "scopes": list(request.auth.scopes),
            "display": request.user.display_name,
            "claims": dict(user.claims),
        }
    )


@requires("role:admin")
async def starlette_admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.state.user.id)
    await websocket.close()


def make_app(**options: Any) -> Starlette:
    routes = [
        Route("/me", whoami),
        Route("/health", whoami),
        Route("/public/{rest:path}", whoami),
        Route("/starlette-admin", starlette_admin),
        WebSocketRoute("/ws", echo),
    ]
    return guarded_app(routes, **options)


@pytest.fixture
def app(server: JWKSServer) -> Starlette:
    """The app behind the ``client`` fixture: make_app for the test key server."""
    return make_app(base_url=server.url)


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_each_algorithm_reaches_the_handler(alg: str) -> None:
    issuer = Issuer(alg=alg)
    with JWKSServer(issuer) as server:
        app = make_app(base_url=server.url)
        async with asgi_client(app) as client:
            token = issuer.token(user_id="u1", email="a@example.com", role="user,admin")
            response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "u1"
    assert body["email"] == "a@example.com"
    assert body["roles"] == ["admin", "user"]
    assert body["scopes"] == ["authenticated", "role:admin", "role:user"]
    assert body["display"] == "Test User"
    assert body["claims"]["iss"] == server.url
    assert server.requests == 1


async def test_user_claims_are_read_only(client: httpx.AsyncClient, issuer: Issuer) -> None:
    seen: list[BetterAuthUser] = []

    async def grab(request: Request) -> Response:
        seen.append(request.state.user)
        return Response()

    app = Starlette(routes=[Route("/", grab)])
    app.add_middleware(BetterAuthMiddleware, base_url=issuer.base_url)
    async with asgi_client(app) as c:
        assert (await c.get("/", headers=bearer(issuer.token()))).status_code == 200
    with pytest.raises(TypeError):
        seen[0].claims["sub"] = "someone else"  # type: ignore[index]


async def test_missing_token_is_401_without_error_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


async def test_bad_token_is_401_invalid_token(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.expired_token()
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert "expired" in challenge
    assert token not in response.text
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_scheme_is_case_insensitive(
    client: httpx.AsyncClient, issuer: Issuer, scheme: str
) -> None:
    response = await client.get("/me", headers={"authorization": f"{scheme} {issuer.token()}"})
    assert response.status_code == 200


async def test_two_authorization_headers_are_refused(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token()
    headers = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_other_scheme_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/me", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_public_routes_exact_prefix_and_method(server: JWKSServer) -> None:
    app = make_app(base_url=server.url, public=["/health", "/public/*", "OPTIONS /*"])
    async with asgi_client(app) as client:
        assert (await client.get("/health")).json() == {"anonymous": True, "authenticated": False}
        assert (await client.get("/public/a/b")).status_code == 200
        assert (await client.get("/healthz")).status_code == 401
        assert (await client.get("/me")).status_code == 401
        preflight = await client.options("/me")
        assert preflight.status_code != 401  # reaches the app (which answers 405)
    assert server.requests == 0


async def test_public_route_with_a_failing_token_is_still_401(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = make_app(base_url=server.url, public=["/health"])
    async with asgi_client(app) as c:
        response = await c.get("/health", headers=bearer(issuer.expired_token()))
        assert response.status_code == 401
        assert (await c.get("/health", headers=bearer(issuer.token()))).json()["id"]


async def test_optional_mode(server: JWKSServer, issuer: Issuer) -> None:
    app = make_app(base_url=server.url, optional=True)
    async with asgi_client(app) as c:
        anonymous = await c.get("/me")
        assert anonymous.json() == {"anonymous": True, "authenticated": False}
        refused = await c.get("/me", headers=bearer(issuer.token(exp=None)))
        assert refused.status_code == 401
        assert (await c.get("/me", headers=bearer(issuer.token()))).status_code == 200


async def test_starlette_requires_sees_roles(client: httpx.AsyncClient, issuer: Issuer) -> None:
    user = await client.get("/starlette-admin", headers=bearer(issuer.token(role="user")))
    assert user.status_code == 403
    admin = await client.get("/starlette-admin", headers=bearer(issuer.token(role="user,admin")))
    assert admin.status_code == 200


async def test_banned_user_is_403(client: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await client.get("/me", headers=bearer(issuer.token(banned=True)))
    assert response.status_code == 403
    assert response.json()["error_description"] == "this user is banned"


async def test_allow_banned(server: JWKSServer, issuer: Issuer) -> None:
    app = make_app(base_url=server.url, allow_banned=True)
    async with asgi_client(app) as c:
        assert (await c.get("/me", headers=bearer(issuer.token(banned=True)))).status_code == 200


@pytest.mark.parametrize(
    ("roles", "claims", "expected"),
    [
        ("role", {"role": "user,admin"}, ["admin", "user"]),
        ("role", {"role": ["editor", "admin"]}, ["admin", "editor"]),
        ("org.roles", {"org": {"roles": "owner, member"}}, ["member", "owner"]),
        ("groups", {"groups": ["a"]}, ["a"]),
    ],
)
async def test_role_sources(
    server: JWKSServer, issuer: Issuer, roles: str, claims: dict[str, Any], expected: list[str]
) -> None:
    app = make_app(base_url=server.url, roles=roles)
    async with asgi_client(app) as c:
        token = issuer.token(**{"role": None, **claims})
        assert (await c.get("/me", headers=bearer(token))).json()["roles"] == expected


async def test_role_callable(server: JWKSServer, issuer: Issuer) -> None:
    app = make_app(base_url=server.url, roles=lambda claims: ["from-callable", claims["email"]])
    async with asgi_client(app) as c:
        body = (await c.get("/me", headers=bearer(issuer.token(email="e@x.io")))).json()
    assert body["roles"] == ["e@x.io", "from-callable"]


async def test_oauth_scopes_land_in_credentials(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.token(scope="read:posts openid", header={"typ": "at+jwt"})
    body = (await client.get("/me", headers=bearer(token))).json()
    assert "scope:read:posts" in body["scopes"]
    assert "scope:openid" in body["scopes"]


async def test_on_error_hook_overrides_the_response(server: JWKSServer) -> None:
    seen: list[BetterAuthError] = []

    def on_error(conn: object, error: BetterAuthError) -> Response:
        seen.append(error)
        return JSONResponse({"custom": error.status_code}, status_code=error.status_code)

    app = make_app(base_url=server.url, on_error=on_error)
    async with asgi_client(app) as c:
        response = await c.get("/me")
    assert response.json() == {"custom": 401}
    assert type(seen[0]).__name__ == "MissingTokenError"


async def test_key_server_down_is_503_with_retry_after() -> None:
    with JWKSServer() as server:
        server.status = 500
        app = make_app(base_url=server.url)
        issuer = server.issuer
        async with asgi_client(app) as c:
            response = await c.get("/me", headers=bearer(issuer.token()))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_lifespan_passes_through_and_warms(server: JWKSServer) -> None:
    app = make_app(base_url=server.url, warm_on_startup=True)
    messages: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert server.requests == 1


async def test_websocket_accepted_with_token(server: JWKSServer, issuer: Issuer) -> None:
    app = make_app(base_url=server.url)
    token = issuer.token(user_id="ws-user")
    sent = await websocket_session(app, "/ws", token=token)
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1] == {"type": "websocket.send", "text": "ws-user"}


async def test_websocket_denied_with_http_401(server: JWKSServer) -> None:
    sent = await websocket_session(make_app(base_url=server.url), "/ws")
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "unauthorized"


async def test_websocket_closed_1008_without_denial_extension(server: JWKSServer) -> None:
    sent = await websocket_session(make_app(base_url=server.url), "/ws", denial_extension=False)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]


async def test_other_scopes_pass_untouched(server: JWKSServer) -> None:
    seen: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    middleware = BetterAuthMiddleware(inner, base_url=server.url)

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    scope: Scope = {"type": "lifespan", "state": {}}
    await middleware(scope, receive, send)
    assert seen == [{"type": "lifespan", "state": {}}]
    assert server.requests == 0


async def test_refusal_log_line_has_fingerprint_not_token(
    client: httpx.AsyncClient, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.expired_token()
    with caplog.at_level(logging.DEBUG, logger="starlette_betterauth"):
        await client.get("/me", headers=bearer(token))
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1
    assert "GET /me: ExpiredTokenError" in lines[0]
    assert "sha256:" in lines[0]
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


def test_configuration_error_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BETTER_AUTH_URL", raising=False)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    with pytest.raises(ConfigurationError, match="BETTER_AUTH_URL"):
        BetterAuthMiddleware(app)
    with pytest.raises(ConfigurationError, match="issuer"):
        BetterAuthMiddleware(app, jwks_url="https://a.example/jwks")
    with pytest.raises(ConfigurationError, match="http"):
        BetterAuthMiddleware(app, base_url="ftp://a.example")
    verifier = TokenVerifier.for_server("https://a.example")
    with pytest.raises(ConfigurationError, match="either verifier"):
        BetterAuthMiddleware(app, verifier=verifier, base_url="https://a.example")
    with pytest.raises(ConfigurationError, match="public route"):
        BetterAuthMiddleware(app, base_url="https://a.example", public=["health"])


async def test_base_url_from_environment(
    server: JWKSServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETTER_AUTH_URL", server.url)
    app = make_app()
    async with asgi_client(app) as c:
        assert (await c.get("/me", headers=bearer(issuer.token()))).status_code == 200


async def test_custom_jwks_url_issuer_and_audience_list() -> None:
    issuer = Issuer("https://issuer.example")
    with JWKSServer(issuer, path="/custom/keys") as server:
        app = make_app(
            jwks_url=server.jwks_url,
            issuer="https://issuer.example",
            audience=["api-1", "api-2"],
        )
        async with asgi_client(app) as c:
            ok = await c.get("/me", headers=bearer(issuer.token(aud=["other", "api-2"])))
            wrong = await c.get("/me", headers=bearer(issuer.token(aud="api-3")))
    assert ok.status_code == 200
    assert wrong.status_code == 401
    assert "aud" in wrong.json()["error_description"]


async def test_roles_callable_that_raises_gives_no_roles(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(claims: Any) -> list[str]:
        raise KeyError("org")

    app = make_app(base_url=server.url, roles=broken)
    async with asgi_client(app) as c:
        with caplog.at_level(logging.ERROR, logger="starlette_betterauth"):
            me = await c.get("/me", headers=bearer(issuer.token(role="admin")))
            admin = await c.get("/starlette-admin", headers=bearer(issuer.token(role="admin")))
    assert me.status_code == 200
    assert me.json()["roles"] == []
    assert admin.status_code == 403
    assert "the roles callable raised" in caplog.text


async def test_shared_user_and_credentials_cannot_leak_between_requests(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(role="user")
    first = await client.get("/me", headers=bearer(token))
    assert first.json()["scopes"] == ["authenticated", "role:user"]
    seen: list[BetterAuthUser] = []

    async def escalate(request: Request) -> Response:
        request.auth.scopes.append("role:admin")
        seen.append(request.state.user)
        return Response()

    app = make_app(base_url=issuer.base_url)
    app.router.routes.append(Route("/escalate", escalate))
    async with asgi_client(app) as c:
        await c.get("/escalate", headers=bearer(token))
        assert (await c.get("/starlette-admin", headers=bearer(token))).status_code == 403
    with pytest.raises(AttributeError, match="immutable"):
        seen[0].roles = frozenset({"admin"})


def test_verifier_with_verification_settings_is_a_configuration_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    verifier = TokenVerifier.for_server("https://a.example")
    for options in ({"algorithms": ["ES256"]}, {"leeway": 0}, {"verify_audience": False}):
        with pytest.raises(ConfigurationError, match="either verifier"):
            BetterAuthMiddleware(app, verifier=verifier, **options)

"""requires_role and requires_scope on every Starlette endpoint style, with real tokens.

The apps run behind a real BetterAuthMiddleware that fetches its keys from the
testing kit's JWKSServer on 127.0.0.1; tokens are minted by its Issuer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from _helpers import asgi_client, bearer, guarded_app
from _serving import denial, threaded_uvicorn, websocket_session
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.endpoints import HTTPEndpoint, WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from starlette_betterauth import BetterAuthUser, requires_role, requires_scope
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer, JWKSServer

if TYPE_CHECKING:
    # Only the type checker sees this name: the guard must cope with an
    # annotation it cannot evaluate.
    from starlette.requests import Request as LaterRequest

pytestmark = pytest.mark.anyio

RESOURCE = "https://api.example.com"
DENIED_ADMIN = "this endpoint needs the 'admin' role"
USER_ID = "uNoQAdoV9LthHdH9Z7KjkzWB5eA85RmZ"


def _user(connection: Request | WebSocket) -> BetterAuthUser:
    user = connection.state.user
    assert isinstance(user, BetterAuthUser)
    return user


def _ok(request: Request, style: str) -> JSONResponse:
    user = _user(request)
    return JSONResponse({"style": style, "id": user.id, "roles": sorted(user.roles)})


@requires_role("admin")
async def async_endpoint(request: Request) -> Response:
    return _ok(request, "async")


@requires_role("admin")
def sync_endpoint(request: Request) -> Response:
    return _ok(request, "sync")


@requires_role("admin")
async def untyped_endpoint(request):  # type: ignore[no-untyped-def]
    return _ok(request, "untyped")


@requires_role("admin")
async def forward_ref_endpoint(request: LaterRequest) -> Response:
    return _ok(request, "forward-ref")


class AdminEndpoint(HTTPEndpoint):
    @requires_role("admin")
    async def get(self, request: Request) -> Response:
        return _ok(request, "endpoint-async")

    @requires_role("admin")
    def post(self, request: Request) -> Response:
        return _ok(request, "endpoint-sync")


@requires_role("admin")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"{_user(websocket).id}:{text}")


class AdminSocket(WebSocketEndpoint):
    encoding = "text"

    @requires_role("admin")
    async def on_connect(self, websocket: WebSocket) -> None:
        await websocket.accept()

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(f"{_user(websocket).id}:{data}")


@requires_role(any_of=("admin", "editor"))
async def any_endpoint(request: Request) -> Response:
    return _ok(request, "any")


@requires_role(all_of=("user", "admin"))
async def all_endpoint(request: Request) -> Response:
    return _ok(request, "all")


@requires_role("staff")
@requires_role(any_of=("admin", "editor"))
async def stacked_endpoint(request: Request) -> Response:
    return _ok(request, "stacked")


@requires_scope("reports:read")
async def scope_endpoint(request: Request) -> Response:
    return JSONResponse({"scopes": sorted(_user(request).scopes)})


@requires_scope(all_of=("reports:read", "reports:export"))
async def scopes_endpoint(request: Request) -> Response:
    return JSONResponse({"scopes": sorted(_user(request).scopes)})


@requires("role:admin")
async def starlette_requires_role(request: Request) -> Response:
    return JSONResponse({"auth": request.auth.scopes})


@requires(["authenticated", "scope:reports:read"])
async def starlette_requires_scope(request: Request) -> Response:
    return JSONResponse({"auth": request.auth.scopes})


async def whoami(request: Request) -> Response:
    user = request.state.user
    if user is None:
        return JSONResponse({"user": None, "auth": request.auth.scopes})
    return JSONResponse({"roles": sorted(user.roles), "auth": request.auth.scopes})


HTTP_STYLES = {
    "async": ("GET", "/async"),
    "sync": ("GET", "/sync"),
    "untyped": ("GET", "/untyped"),
    "forward-ref": ("GET", "/forward-ref"),
    "endpoint-async": ("GET", "/endpoint"),
    "endpoint-sync": ("POST", "/endpoint"),
}
WEBSOCKET_STYLES = {"websocket": "/ws", "websocket-endpoint": "/ws-class"}


def make_app(url: str, **options: Any) -> Starlette:
    """The endpoints above behind the middleware; optional, so anonymous callers reach them."""
    options.setdefault("optional", True)
    routes = [
        Route("/async", async_endpoint),
        Route("/sync", sync_endpoint),
        Route("/untyped", untyped_endpoint),
        Route("/forward-ref", forward_ref_endpoint),
        Route("/endpoint", AdminEndpoint, methods=["GET", "POST"]),
        WebSocketRoute("/ws", websocket_endpoint),
        WebSocketRoute("/ws-class", AdminSocket),
        Route("/any", any_endpoint),
        Route("/all", all_endpoint),
        Route("/stacked", stacked_endpoint),
        Route("/scope", scope_endpoint),
        Route("/scopes", scopes_endpoint),
        Route("/starlette-role", starlette_requires_role),
        Route("/starlette-scope", starlette_requires_scope),
        Route("/whoami", whoami),
    ]
    return guarded_app(routes, base_url=url, **options)


@pytest.fixture
def app(server: JWKSServer) -> Starlette:
    """The app behind the ``client`` fixture: make_app for the test key server."""
    return make_app(server.url)


# What each caller is, and the exact answer a guarded "admin" endpoint gives it.
#   claims (None: no token) -> status, WWW-Authenticate, JSON body (None: the endpoint ran)
OUTCOMES: dict[str, tuple[dict[str, Any] | None, int, str | None, dict[str, str] | None]] = {
    "anonymous": (
        None,
        401,
        "Bearer",
        {"error": "unauthorized", "error_description": "this endpoint needs a bearer token"},
    ),
    "wrong-role": (
        {"role": "user"},
        403,
        f'Bearer error="insufficient_scope", error_description="{DENIED_ADMIN}"',
        {"error": "insufficient_scope", "error_description": DENIED_ADMIN},
    ),
    "right-role": ({"role": "admin"}, 200, None, None),
    "multi-role": ({"role": "user,admin"}, 200, None, None),
    "banned": (
        {"role": "admin", "banned": True},
        403,
        "Bearer",
        {"error": "forbidden", "error_description": "this user is banned"},
    ),
}


def token_for(issuer: Issuer, claims: Mapping[str, Any] | None) -> str | None:
    return None if claims is None else issuer.token(user_id=USER_ID, **claims)


def assert_refusal(
    response: httpx.Response, status: int, challenge: str | None, body: Mapping[str, str] | None
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["www-authenticate"] == challenge
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == body


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("style", list(HTTP_STYLES))
async def test_http_endpoint_styles(
    client: httpx.AsyncClient, issuer: Issuer, style: str, outcome: str
) -> None:
    claims, status, challenge, body = OUTCOMES[outcome]
    method, path = HTTP_STYLES[style]
    response = await client.request(method, path, headers=bearer(token_for(issuer, claims)))
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json() == {
            "style": style,
            "id": USER_ID,
            "roles": sorted(str(claims and claims["role"]).split(",")),
        }
        assert "www-authenticate" not in response.headers
    else:
        assert_refusal(response, status, challenge, body)


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("style", list(WEBSOCKET_STYLES))
async def test_websocket_endpoint_styles(
    server: JWKSServer, issuer: Issuer, style: str, outcome: str
) -> None:
    claims, status, challenge, body = OUTCOMES[outcome]
    token = token_for(issuer, claims)
    sent = await websocket_session(
        make_app(server.url), WEBSOCKET_STYLES[style], token=token, texts=["hi", "there"]
    )
    if status == 200:
        assert claims is not None
        assert sent[0]["type"] == "websocket.accept"
        echoes = [m["text"] for m in sent if m["type"] == "websocket.send"]
        assert echoes == [f"{USER_ID}:hi", f"{USER_ID}:there"]
    else:
        got_status, headers, raw = denial(sent)
        assert got_status == status
        assert headers["www-authenticate"] == challenge
        assert headers["content-type"] == "application/json"
        assert json.loads(raw) == body


@pytest.mark.parametrize("style", list(WEBSOCKET_STYLES))
async def test_websocket_refusal_without_denial_extension_closes_1008(
    server: JWKSServer, issuer: Issuer, style: str
) -> None:
    app = make_app(server.url)
    for token in (None, issuer.token(role="user")):
        sent = await websocket_session(
            app, WEBSOCKET_STYLES[style], token=token, denial_extension=False
        )
        assert sent[0]["type"] == "websocket.close"
        assert sent[0]["code"] == 1008
        assert not any(m["type"] == "websocket.accept" for m in sent)


async def test_guard_refusals_are_byte_identical_to_the_middleware(
    server: JWKSServer, issuer: Issuer
) -> None:
    strict = make_app(server.url, optional=False)
    relaxed = make_app(server.url)
    responses = []
    for app in (strict, relaxed):
        async with asgi_client(app) as c:
            responses.append(await c.get("/async"))
    by_middleware, by_guard = responses
    assert by_middleware.status_code == by_guard.status_code == 401
    assert by_middleware.headers.raw == by_guard.headers.raw
    assert by_middleware.content == by_guard.content


async def test_guard_behind_a_public_route(server: JWKSServer, issuer: Issuer) -> None:
    app = make_app(server.url, optional=False, public=["/async"])
    async with asgi_client(app) as c:
        anonymous = await c.get("/async")
        admin = await c.get("/async", headers=bearer(issuer.token(role="admin")))
    assert_refusal(anonymous, *OUTCOMES["anonymous"][1:])
    assert admin.status_code == 200


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/any", "admin", 200),
        ("/any", "editor", 200),
        ("/any", "user,editor", 200),
        ("/any", "user", 403),
        ("/all", "user,admin", 200),
        ("/all", "admin", 403),
        ("/all", "user", 403),
        ("/stacked", "staff,editor", 200),
        ("/stacked", "staff", 403),
        ("/stacked", "editor", 403),
    ],
)
async def test_any_of_all_of_and_stacking(
    client: httpx.AsyncClient, issuer: Issuer, path: str, role: str, status: int
) -> None:
    response = await client.get(path, headers=bearer(issuer.token(role=role)))
    assert response.status_code == status, response.text


async def test_refusal_reasons_name_the_requirement(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(role="user")
    reasons = {}
    for path in ("/any", "/all", "/stacked"):
        response = await client.get(path, headers=bearer(token))
        assert response.status_code == 403
        reasons[path] = response.json()["error_description"]
        assert response.headers["www-authenticate"] == (
            f'Bearer error="insufficient_scope", error_description="{reasons[path]}"'
        )
    assert reasons == {
        "/any": "this endpoint needs one of the roles admin, editor",
        "/all": "this endpoint needs all of the roles user, admin",
        "/stacked": "this endpoint needs the 'staff' role",
    }


async def test_banned_users_pass_only_when_the_middleware_allows_them(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = make_app(server.url, allow_banned=True)
    async with asgi_client(app) as c:
        banned_admin = await c.get(
            "/async", headers=bearer(issuer.token(role="admin", banned=True))
        )
        banned_user = await c.get("/async", headers=bearer(issuer.token(role="user", banned=True)))
    assert banned_admin.status_code == 200
    assert_refusal(banned_user, *OUTCOMES["wrong-role"][1:])


# -- where roles come from ---------------------------------------------------------------


def _org_roles(claims: Mapping[str, Any]) -> list[str]:
    memberships = claims.get("memberships", [])
    return [m["role"] for m in memberships if m.get("org") == "acme"]


def _role_as_string(claims: Mapping[str, Any]) -> str:
    value = claims.get("role")
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize(
    ("roles_option", "claims", "expected"),
    [
        ("role", {"role": "user"}, ["user"]),
        ("role", {"role": "user,admin"}, ["admin", "user"]),
        ("role", {"role": "admin,editor,"}, ["admin", "editor"]),
        ("role", {"role": ["user", "admin"]}, ["admin", "user"]),
        ("role", {"role": None}, []),
        ("roles", {"roles": "user,admin"}, ["admin", "user"]),
        ("org.roles", {"org": {"id": "acme", "roles": ["owner", "admin"]}}, ["admin", "owner"]),
        ("org.roles", {"org": {"id": "acme", "roles": "owner"}}, ["owner"]),
        ("org.roles", {"org": "acme"}, []),
        (_org_roles, {"memberships": [{"org": "acme", "role": "admin"}]}, ["admin"]),
        (_org_roles, {"memberships": [{"org": "other", "role": "admin"}]}, []),
        (_role_as_string, {"role": "user,admin"}, ["admin", "user"]),
    ],
)
async def test_roles_come_from_the_configured_source(
    server: JWKSServer,
    issuer: Issuer,
    roles_option: str | Callable[[Mapping[str, Any]], Any],
    claims: dict[str, Any],
    expected: list[str],
) -> None:
    app = make_app(server.url, roles=roles_option)
    token = issuer.token(**{"role": None, **claims})
    async with asgi_client(app) as c:
        seen = await c.get("/whoami", headers=bearer(token))
        admin = await c.get("/async", headers=bearer(token))
    assert seen.status_code == 200
    assert seen.json()["roles"] == expected
    assert seen.json()["auth"] == ["authenticated", *(f"role:{r}" for r in expected)]
    assert admin.status_code == (200 if "admin" in expected else 403)


# -- scopes and Starlette's own requires --------------------------------------------------


@pytest.fixture
async def api_client(server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(server.url, audience=[server.url, RESOURCE])
    async with asgi_client(app) as c:
        yield c


@pytest.mark.parametrize(
    ("scope", "one", "both"),
    [
        ("openid reports:read", 200, 403),
        ("reports:read reports:export", 200, 200),
        ("reports:export", 403, 403),
        ("openid", 403, 403),
        ("", 403, 403),
        (None, 403, 403),
    ],
)
async def test_requires_scope_with_oauth_access_tokens(
    api_client: httpx.AsyncClient, issuer: Issuer, scope: str | None, one: int, both: int
) -> None:
    # api_client takes session tokens too, so it checks iss against the base URL.
    token = issuer.access_token(scope=scope, audience=RESOURCE, iss=issuer.base_url)
    single = await api_client.get("/scope", headers=bearer(token))
    double = await api_client.get("/scopes", headers=bearer(token))
    assert single.status_code == one
    assert double.status_code == both
    if one == 200:
        assert single.json()["scopes"] == sorted((scope or "").split())
    else:
        assert single.headers["www-authenticate"] == (
            'Bearer error="insufficient_scope", '
            "error_description=\"this endpoint needs the 'reports:read' scope\""
        )
    if both == 403:
        assert double.json()["error_description"] == (
            "this endpoint needs all of the scopes reports:read, reports:export"
        )


async def test_anonymous_scope_request_is_401(api_client: httpx.AsyncClient) -> None:
    assert_refusal(await api_client.get("/scope"), *OUTCOMES["anonymous"][1:])


async def test_credentials_scopes_for_starlette_requires(
    api_client: httpx.AsyncClient, issuer: Issuer
) -> None:
    session = issuer.token(role="user,admin")
    oauth = issuer.access_token(scope="openid reports:read", audience=RESOURCE, iss=issuer.base_url)
    anonymous = await api_client.get("/whoami")
    assert anonymous.json() == {"user": None, "auth": []}
    seen = await api_client.get("/whoami", headers=bearer(session))
    assert seen.json()["auth"] == ["authenticated", "role:admin", "role:user"]
    seen = await api_client.get("/whoami", headers=bearer(oauth))
    assert seen.json()["auth"] == ["authenticated", "scope:openid", "scope:reports:read"]

    assert (await api_client.get("/starlette-role", headers=bearer(session))).status_code == 200
    refused = await api_client.get("/starlette-role", headers=bearer(issuer.token(role="user")))
    assert refused.status_code == 403
    assert (await api_client.get("/starlette-scope", headers=bearer(oauth))).status_code == 200
    assert (await api_client.get("/starlette-scope", headers=bearer(session))).status_code == 403


# -- without the middleware --------------------------------------------------------------


async def test_guard_without_middleware_fails_closed_and_loudly() -> None:
    app = Starlette(routes=[Route("/async", async_endpoint)])
    async with asgi_client(app) as c:
        with pytest.raises(RuntimeError, match="add BetterAuthMiddleware"):
            await c.get("/async")


async def test_starlette_endpoint_without_request_parameter_is_reported(
    server: JWKSServer, issuer: Issuer
) -> None:
    @requires_role("admin")
    async def no_request() -> Response:
        return Response("unreachable")

    app = make_app(server.url)
    app.router.routes.append(Route("/no-request", no_request))
    async with asgi_client(app) as c:
        with pytest.raises(TypeError, match="no_request is guarded by requires_role"):
            await c.get("/no-request", headers=bearer(issuer.token(role="admin")))


async def test_guard_refuses_a_foreign_user_object() -> None:
    request = Request({"type": "http", "state": {"user": "someone"}})
    with pytest.raises(RuntimeError, match=r"request\.state\.user is a str, not a user"):
        await async_endpoint(request)


async def test_guarded_function_called_without_its_request() -> None:
    loose: Any = async_endpoint
    with pytest.raises(TypeError, match=r"called without its request \(got NoneType for 'request'"):
        await loose()


# -- misapplied guards fail at import time -------------------------------------------------


def _misapply(decorator: Callable[[Any], Any], target: Any) -> None:
    decorator(target)


class _NotAFunction(HTTPEndpoint):
    pass


def _generator(request: Request) -> Iterator[str]:
    yield "x"


def _sync_websocket(websocket: WebSocket) -> None:
    pass


def _variadic(*args: Any, **kwargs: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (_NotAFunction, r"test_guards\._NotAFunction is not one \(decorate its methods"),
        (staticmethod(_variadic), r"the staticmethod test_guards\._variadic: put the guard below"),
        (print, r"guards endpoint functions, and builtins\.print is not one"),
        (_generator, r"cannot guard the generator function test_guards\._generator"),
        (_sync_websocket, r"websocket endpoint test_guards\._sync_websocket must be async"),
        (_variadic, r"cannot find the connection of test_guards\._variadic"),
    ],
)
@pytest.mark.parametrize("decorator", [requires_role("admin"), requires_scope("read")])
def test_misapplied_guard_fails_at_decoration_naming_the_function(
    decorator: Callable[[Any], Any], target: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _misapply(decorator, target)


def test_bare_decorator_names_the_function() -> None:
    with pytest.raises(ConfigurationError, match=r"write @requires_role\('name'\) above .*sync_"):
        requires_role(sync_endpoint)  # type: ignore[call-overload]


# Untyped handles: mypy already refuses most of these spellings through the overloads.
_role: Any = requires_role
_scope: Any = requires_scope


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: _role("admin", "editor"),
            r"requires_role\('admin', 'editor'\) is ambiguous: write "
            r"requires_role\(any_of=\('admin', 'editor'\)\) .* requires_role\(all_of=",
        ),
        (lambda: _role(["admin", "editor"]), r"is ambiguous"),
        (lambda: _scope("a", "b"), r"requires_scope\('a', 'b'\) is ambiguous"),
        (lambda: _role(3), r"requires_role takes role names \(strings\), got 3"),
        (lambda: _role(), r"takes one role .* got 0 of those"),
        (lambda: _role("admin", any_of=("x",)), r"got 2 of those"),
        (lambda: _role(any_of=("a",), all_of=("b",)), r"got 2 of those"),
        (lambda: _role(any_of=()), r"any_of=...\) needs at least one role"),
        (lambda: _role(any_of="admin"), r"takes a tuple of roles"),
        (lambda: _role(all_of=["admin", 3]), r"a role is a non-empty string, got 3"),
        (lambda: _role(""), r"a role is a non-empty string"),
        (lambda: _role("user,admin"), r"'user,admin' is not one role"),
        (lambda: _role(" admin"), r"' admin' is not one role"),
        (lambda: _scope("read write"), r"'read write' is not one scope"),
        (lambda: _scope(any_of=("read", "a\tb")), r"is not one scope"),
    ],
)
def test_ambiguous_or_empty_spellings_fail_at_import(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_guard_keeps_the_function_identity() -> None:
    assert async_endpoint.__name__ == "async_endpoint"
    assert async_endpoint.__wrapped__.__name__ == "async_endpoint"  # type: ignore[attr-defined]
    assert AdminEndpoint.get.__qualname__ == "AdminEndpoint.get"


# -- a real server on the wire -------------------------------------------------------------


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[Issuer, str]]:
    """The guarded app under uvicorn (in a thread) with its own key server."""
    issuer = Issuer()
    with JWKSServer(issuer) as keys, threaded_uvicorn(make_app(keys.url)) as address:
        yield issuer, address


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_over_uvicorn(wire: tuple[Issuer, str], outcome: str) -> None:
    issuer, address = wire
    claims, status, challenge, body = OUTCOMES[outcome]
    headers = bearer(token_for(issuer, claims))
    response = httpx.get(f"http://{address}/async", headers=headers, timeout=10)
    assert response.status_code == status
    if status != 200:
        assert_refusal(response, status, challenge, body)
    for path in WEBSOCKET_STYLES.values():
        if status == 200:
            with connect(
                f"ws://{address}{path}", additional_headers=headers, open_timeout=10
            ) as ws:
                ws.send("hi")
                assert ws.recv(timeout=10) == f"{USER_ID}:hi"
            continue
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{address}{path}", additional_headers=headers, open_timeout=10)
        answer = refused.value.response
        assert answer.status_code == status
        assert answer.headers["WWW-Authenticate"] == challenge
        assert json.loads(answer.body or b"") == body

"""FastAPI: the requires_role decorator on path operations and the dependencies, with real tokens.

Routes live on a module-level router and this module uses postponed
annotations, so FastAPI resolves every parameter from strings, as in most apps.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import httpx
import pytest
from _helpers import asgi_client, bearer
from _serving import denial, websocket_session
from fastapi import APIRouter, Depends, FastAPI, Request, Security, WebSocket
from starlette.middleware import Middleware

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, requires_role, requires_scope
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.fastapi import (
    BetterAuthHTTPException,
    CurrentUser,
    OptionalUser,
    bearer_scheme,
    error_handler,
    require_role,
    require_scope,
)
from starlette_betterauth.testing import Issuer, JWKSServer

pytestmark = pytest.mark.anyio

RESOURCE = "https://api.example.com"
USER_ID = "uNoQAdoV9LthHdH9Z7KjkzWB5eA85RmZ"
DENIED_ADMIN = "this endpoint needs the 'admin' role"
MISSING = "this endpoint needs a bearer token"

router = APIRouter()
Admin = Annotated[BetterAuthUser, Depends(require_role("admin"))]


def page_size(size: int = 10) -> int:
    return size


@router.get("/decorated")
@requires_role("admin")
async def decorated(request: Request) -> dict[str, Any]:
    return {"style": "decorated", "id": request.state.user.id}


@router.get("/decorated-bare/{item_id}", dependencies=[Security(bearer_scheme)])
@requires_role("admin")
async def decorated_bare(
    item_id: int, size: Annotated[int, Depends(page_size)], q: str = "none"
) -> dict[str, Any]:
    return {"style": "decorated-bare", "item_id": item_id, "size": size, "q": q}


@router.get("/stacked/{item_id}")
@requires_role("staff")
@requires_scope("items:read")
async def stacked(item_id: int) -> dict[str, Any]:
    return {"item_id": item_id}


@router.get("/collision")
@requires_role("admin")
async def collision(betterauth_connection: str = "unset") -> dict[str, Any]:
    return {"betterauth_connection": betterauth_connection}


@router.get("/decorated-sync")
@requires_role("admin")
def decorated_sync() -> dict[str, Any]:
    return {"style": "decorated-sync"}


@router.get("/dependency")
async def dependency(user: Admin) -> dict[str, Any]:
    return {"style": "dependency", "id": user.id}


@router.get("/dependency-list", dependencies=[Depends(require_role("admin"))])
def dependency_list() -> dict[str, Any]:
    return {"style": "dependency-list"}


@router.get("/me")
async def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "roles": sorted(user.roles)}


@router.get("/maybe")
async def maybe(user: OptionalUser) -> dict[str, Any]:
    return {"id": None if user is None else user.id}


@router.get("/any")
async def any_role(
    user: Annotated[BetterAuthUser, Depends(require_role(any_of=("admin", "editor")))],
) -> dict[str, Any]:
    return {"roles": sorted(user.roles)}


@router.get("/all")
async def all_roles(
    user: Annotated[BetterAuthUser, Depends(require_role(all_of=("user", "admin")))],
) -> dict[str, Any]:
    return {"roles": sorted(user.roles)}


@router.get("/reports")
async def reports(
    user: Annotated[BetterAuthUser, Depends(require_scope("reports:read"))],
) -> dict[str, Any]:
    return {"scopes": sorted(user.scopes)}


@router.websocket("/ws-decorated")
@requires_role("admin")
async def ws_decorated(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"{websocket.state.user.id}:{text}")


@router.websocket("/ws-dependency")
async def ws_dependency(websocket: WebSocket, user: Admin) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"{user.id}:{text}")


async def accept_first(websocket: WebSocket) -> None:
    await websocket.accept()


async def read_connect_first(websocket: WebSocket) -> None:
    await websocket.receive()


@router.websocket("/ws-accepted-early", dependencies=[Depends(accept_first)])
@requires_role("admin")
async def ws_accepted_early(websocket: WebSocket) -> None:
    await websocket.send_text("admitted")


@router.websocket("/ws-connect-read", dependencies=[Depends(read_connect_first)])
@requires_role("admin")
async def ws_connect_read(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("admitted")


def make_app(url: str, *, handler: bool, **options: Any) -> FastAPI:
    options.setdefault("optional", True)
    app = FastAPI(middleware=[Middleware(BetterAuthMiddleware, base_url=url, **options)])
    if handler:
        app.add_exception_handler(BetterAuthHTTPException, error_handler)
    app.include_router(router)
    return app


@pytest.fixture(params=[True, False], ids=["error_handler", "fastapi_handler"])
def handler(request: pytest.FixtureRequest) -> bool:
    with_handler: bool = request.param
    return with_handler


@pytest.fixture
def app(server: JWKSServer, handler: bool) -> FastAPI:
    """The app behind the ``client`` fixture, taking session and access tokens."""
    return make_app(server.url, handler=handler, audience=[server.url, RESOURCE])


#   claims (None: no token) -> status, WWW-Authenticate, reason (None: the endpoint ran)
OUTCOMES: dict[str, tuple[dict[str, Any] | None, int, str | None, tuple[str, str] | None]] = {
    "anonymous": (None, 401, "Bearer", ("unauthorized", MISSING)),
    "wrong-role": (
        {"role": "user"},
        403,
        f'Bearer error="insufficient_scope", error_description="{DENIED_ADMIN}"',
        ("insufficient_scope", DENIED_ADMIN),
    ),
    "right-role": ({"role": "admin"}, 200, None, None),
    "multi-role": ({"role": "user,admin"}, 200, None, None),
    "banned": (
        {"role": "admin", "banned": True},
        403,
        "Bearer",
        ("forbidden", "this user is banned"),
    ),
}
HTTP_STYLES = {
    "decorated": "/decorated",
    "decorated-bare": "/decorated-bare/7?q=x",
    "decorated-sync": "/decorated-sync",
    "dependency": "/dependency",
    "dependency-list": "/dependency-list",
}
WEBSOCKET_STYLES = {"decorated": "/ws-decorated", "dependency": "/ws-dependency"}


def token_for(issuer: Issuer, claims: Mapping[str, Any] | None) -> str | None:
    return None if claims is None else issuer.token(user_id=USER_ID, **claims)


def expected_body(style: str, outcome: str, handler: bool) -> dict[str, Any]:
    """The middleware's body, except where FastAPI's own handler answers a dependency."""
    reason = OUTCOMES[outcome][3]
    assert reason is not None
    by_dependency = style.startswith("dependency") and outcome != "banned"
    if by_dependency and not handler:
        return {"detail": reason[1]}
    return {"error": reason[0], "error_description": reason[1]}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("style", list(HTTP_STYLES))
async def test_fastapi_http_styles(
    client: httpx.AsyncClient, issuer: Issuer, handler: bool, style: str, outcome: str
) -> None:
    claims, status, challenge, _ = OUTCOMES[outcome]
    response = await client.get(HTTP_STYLES[style], headers=bearer(token_for(issuer, claims)))
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["style"] == style
        assert "www-authenticate" not in response.headers
        return
    assert response.headers["www-authenticate"] == challenge
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == expected_body(style, outcome, handler)


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("style", list(WEBSOCKET_STYLES))
async def test_fastapi_websocket_styles(
    server: JWKSServer, issuer: Issuer, handler: bool, style: str, outcome: str
) -> None:
    claims, status, challenge, _ = OUTCOMES[outcome]
    app = make_app(server.url, handler=handler)
    sent = await websocket_session(
        app, WEBSOCKET_STYLES[style], token=token_for(issuer, claims), texts=["hi"]
    )
    if status == 200:
        assert sent[0]["type"] == "websocket.accept"
        assert [m["text"] for m in sent if m["type"] == "websocket.send"] == [f"{USER_ID}:hi"]
        return
    got_status, headers, body = denial(sent)
    assert got_status == status
    assert headers["www-authenticate"] == challenge
    assert headers["cache-control"] == "no-store"
    assert json.loads(body) == expected_body(style, outcome, handler)


async def test_websocket_guard_after_a_dependency_touched_the_handshake(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = make_app(server.url, handler=True)
    user, admin = issuer.token(role="user"), issuer.token(role="admin")
    # Accepted before the guard ran: the refusal can only close it, with 1008.
    sent = await websocket_session(app, "/ws-accepted-early", token=user)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1008
    sent = await websocket_session(app, "/ws-accepted-early", token=admin)
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["admitted"]
    # The connect message was read but not answered: the denial still goes out.
    status, headers, _ = denial(await websocket_session(app, "/ws-connect-read", token=user))
    assert status == 403
    assert headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    sent = await websocket_session(app, "/ws-connect-read", token=admin)
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["admitted"]


async def test_decorated_path_operation_keeps_dependency_injection(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    admin = bearer(issuer.token(role="admin"))
    response = await client.get("/decorated-bare/42?q=hello&size=3", headers=admin)
    assert response.json() == {"style": "decorated-bare", "item_id": 42, "size": 3, "q": "hello"}
    response = await client.get("/decorated-bare/42", headers=admin)
    assert response.json() == {"style": "decorated-bare", "item_id": 42, "size": 10, "q": "none"}
    invalid = await client.get("/decorated-bare/not-a-number", headers=admin)
    assert invalid.status_code == 422


async def test_error_handler_makes_dependency_refusals_identical_to_guard_refusals(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = make_app(server.url, handler=True)
    token = bearer(issuer.token(role="user"))
    async with asgi_client(app) as c:
        for headers in ({}, token):
            by_guard = await c.get("/decorated", headers=headers)
            by_dependency = await c.get("/dependency", headers=headers)
            assert by_guard.status_code == by_dependency.status_code
            assert by_guard.headers.raw == by_dependency.headers.raw
            assert by_guard.content == by_dependency.content


@pytest.mark.parametrize(
    ("role", "scope", "status"),
    [("staff", "items:read", 200), ("staff", "openid", 403), ("user", "items:read", 403)],
)
async def test_stacked_guards_on_a_path_operation_without_request(
    client: httpx.AsyncClient, issuer: Issuer, role: str, scope: str, status: int
) -> None:
    token = issuer.token(role=role, scope=scope)
    response = await client.get("/stacked/5", headers=bearer(token))
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"item_id": 5}
    assert (await client.get("/stacked/5")).status_code == 401


async def test_guard_parameter_does_not_clash_with_an_api_parameter(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    admin = bearer(issuer.token(role="admin"))
    response = await client.get("/collision?betterauth_connection=mine", headers=admin)
    assert response.json() == {"betterauth_connection": "mine"}
    assert (await client.get("/collision")).status_code == 401
    schema = (await client.get("/openapi.json")).json()
    parameters = schema["paths"]["/collision"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["betterauth_connection"]


async def test_current_and_optional_user(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = bearer(issuer.token(user_id=USER_ID, role="user,admin"))
    assert (await client.get("/maybe")).json() == {"id": None}
    assert (await client.get("/maybe", headers=token)).json() == {"id": USER_ID}
    anonymous = await client.get("/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    me = await client.get("/me", headers=token)
    assert me.json() == {"id": USER_ID, "roles": ["admin", "user"]}


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/any", "editor", 200),
        ("/any", "user", 403),
        ("/all", "user,admin", 200),
        ("/all", "admin", 403),
    ],
)
async def test_any_of_and_all_of_dependencies(
    client: httpx.AsyncClient, issuer: Issuer, path: str, role: str, status: int
) -> None:
    response = await client.get(path, headers=bearer(issuer.token(role=role)))
    assert response.status_code == status


async def test_require_scope(client: httpx.AsyncClient, issuer: Issuer) -> None:
    # The app takes session tokens too, so it checks iss against the base URL.
    token = issuer.access_token(scope="openid reports:read", audience=RESOURCE, iss=issuer.base_url)
    granted = await client.get("/reports", headers=bearer(token))
    assert granted.json() == {"scopes": ["openid", "reports:read"]}
    token = issuer.access_token(scope="openid", audience=RESOURCE, iss=issuer.base_url)
    refused = await client.get("/reports", headers=bearer(token))
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", '
        "error_description=\"this endpoint needs the 'reports:read' scope\""
    )


async def test_openapi_declares_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"] == {
        "BetterAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": bearer_scheme.model.description,
        }
    }
    paths = schema["paths"]
    for path in ("/dependency", "/dependency-list", "/me", "/maybe", "/reports"):
        assert paths[path]["get"]["security"] == [{"BetterAuth": []}], path
    bare = paths["/decorated-bare/{item_id}"]["get"]
    assert bare["security"] == [{"BetterAuth": []}]
    # The connection the guard asks FastAPI for is not an API parameter.
    assert sorted(p["name"] for p in bare["parameters"]) == ["item_id", "q", "size"]
    assert "security" not in paths["/decorated"]["get"]


async def test_dependencies_without_the_middleware_fail_closed() -> None:
    app = FastAPI()
    app.include_router(router)
    async with asgi_client(app) as c:
        with pytest.raises(RuntimeError, match="current_user found no user"):
            await c.get("/me")
        with pytest.raises(RuntimeError, match="require_role found no user"):
            await c.get("/dependency")


async def test_error_handler_answers_only_its_exception() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(TypeError, match="not ValueError"):
        await error_handler(request, ValueError("other"))


# -- FastAPI stays optional ----------------------------------------------------------------

_WITHOUT_FASTAPI = """
import sys
sys.modules["fastapi"] = None  # as if FastAPI were not installed
import starlette_betterauth
from starlette_betterauth import requires_role, requires_scope
from starlette_betterauth.testing import Issuer
try:
    import starlette_betterauth.fastapi
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_package_imports_without_fastapi() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_FASTAPI],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "ImportError: starlette_betterauth.fastapi needs FastAPI: "
        "pip install 'starlette-betterauth[fastapi]'"
    )


def test_package_does_not_import_fastapi() -> None:
    code = "import sys, starlette_betterauth; print('fastapi' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# -- requires_role (decorator) and require_role (dependency) cannot be swapped silently ----

SLIPPED = "requires_role('admin') is a decorator for endpoints, not a FastAPI dependency"
# Defining the alias is harmless: FastAPI reads the dependency when a route uses it.
SlippedAdmin = Annotated[BetterAuthUser, Depends(requires_role("admin"))]


@pytest.mark.parametrize(
    ("slip", "advice"),
    [
        (
            lambda: Depends(requires_role("admin")),
            rf"{re.escape(SLIPPED)}: write Depends\(require_role\('admin'\)\) "
            r"\(from starlette_betterauth\.fastapi import require_role\), "
            r"or put @requires_role\('admin'\) below the route decorator",
        ),
        (
            lambda: Security(requires_role(any_of=["admin", "editor"])),
            r"write Depends\(require_role\(any_of=\('admin', 'editor'\)\)\)",
        ),
        (
            lambda: Depends(requires_scope(all_of=(s for s in ("a:read", "a:write")))),
            r"write Depends\(require_scope\(all_of=\('a:read', 'a:write'\)\)\) "
            r"\(from starlette_betterauth\.fastapi import require_scope\)",
        ),
    ],
    ids=["depends", "security-any-of", "scope-all-of-generator"],
)
async def test_guard_used_as_a_dependency_fails_when_the_route_is_defined(
    server: JWKSServer, issuer: Issuer, slip: Callable[[], Any], advice: str
) -> None:
    app = make_app(server.url, handler=True)
    with pytest.raises(ConfigurationError, match=advice):
        app.get("/slip", dependencies=[slip()])(page_size)
    with pytest.raises(ConfigurationError, match=re.escape(SLIPPED)):

        @app.get("/slip")
        async def in_a_parameter(user: SlippedAdmin) -> str:
            return user.id

    # The form the message names works on the same app.
    @app.get("/fixed")
    async def fixed(user: Admin) -> str:
        return user.id

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        ok = await c.get("/fixed", headers=bearer(issuer.token(user_id=USER_ID, role="admin")))
        denied = await c.get("/fixed", headers=bearer(issuer.token(role="user")))
        missing = await c.get("/slip", headers=bearer(issuer.token(role="admin")))
    assert (ok.status_code, ok.json()) == (200, USER_ID)
    assert denied.status_code == 403
    assert missing.status_code == 404  # the refused definitions registered no route


def test_dependency_used_as_a_decorator_fails_at_import() -> None:
    """The reverse slip is loud too: mypy refuses it, and Python at decoration time."""
    app = FastAPI()
    with pytest.raises(TypeError, match="missing 1 required positional argument"):

        @app.get("/admin")  # type: ignore[call-arg, type-var]
        @require_role("admin")  # type: ignore[arg-type]
        async def admin(request: Request) -> str:
            return "never registered"

    assert not [r for r in app.routes if getattr(r, "path", None) == "/admin"]

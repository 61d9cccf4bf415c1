"""Any ASGI app: Litestar, Quart, Django (ASGI) and Falcon behind the middleware, on real servers.

Each framework's app is served by uvicorn on 127.0.0.1 (the Quart app by
Hypercorn too) and called over HTTP and websockets with tokens from the
testing kit, the way the framework table of docs/frameworks.md shows: the user as the
framework exposes it, the package's guards in the framework's idiom, a public
route, refusals with the middleware's answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from types import ModuleType
from typing import Any, cast

import httpx
import pytest
from _serving import threaded_hypercorn, threaded_uvicorn
from starlette.types import ASGIApp
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, requires_role
from starlette_betterauth.testing import Issuer, JWKSServer


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def check_http(
    address: str, issuer: Issuer, *, admin_path: str = "/admin", admin_id: str = "admin-1"
) -> None:
    """The answers every framework's app gives: the same, whatever the framework."""
    user = bearer(issuer.token(sub="user-1", role="user"))
    admin = bearer(issuer.token(sub="admin-1", role="user,admin"))
    with httpx.Client(base_url=f"http://{address}") as client:
        me = client.get("/me", headers=user)
        assert me.status_code == 200, me.text
        assert me.json() == {"id": "user-1"}

        missing = client.get("/me")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"

        expired = client.get("/me", headers=bearer(issuer.expired_token()))
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]

        forbidden = client.get(admin_path, headers=user)
        assert forbidden.status_code == 403, forbidden.text
        assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
        assert forbidden.headers["content-type"].startswith("application/json")
        for name in ("content-type", "content-length", "www-authenticate", "cache-control"):
            assert len(forbidden.headers.get_list(name)) == 1, (name, forbidden.headers)
        assert forbidden.json() == {
            "error": "insufficient_scope",
            "error_description": "this endpoint needs the 'admin' role",
        }

        allowed = client.get(admin_path, headers=admin)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json() == {"admin": admin_id}

        anonymous = client.get("/health")
        assert anonymous.status_code == 200, anonymous.text
        assert anonymous.json() == {"anonymous": True}

        # A guard on a public route refuses an anonymous caller as the middleware would.
        guarded = client.get("/public/admin")
        assert guarded.status_code == 401, guarded.text
        assert guarded.headers["www-authenticate"] == "Bearer"


def check_websocket(address: str, issuer: Issuer, *, guard_status: int = 403) -> None:
    """Accepted with a token; refused without one (401) and without the role."""
    url = f"ws://{address}/ws"
    with connect(url, additional_headers=bearer(issuer.token(sub="ws-1"))) as ws:
        assert ws.recv(timeout=10) == "ws-1"
    with pytest.raises(InvalidStatus) as missing:
        connect(url, open_timeout=10)
    assert missing.value.response.status_code == 401
    assert missing.value.response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(InvalidStatus) as forbidden:
        connect(f"{url}/admin", additional_headers=bearer(issuer.token()), open_timeout=10)
    assert forbidden.value.response.status_code == guard_status


def behind_middleware(app: Any, server: JWKSServer) -> ASGIApp:
    """``app`` (any framework's ASGI callable) behind the middleware, as the docs show."""
    return BetterAuthMiddleware(app, base_url=server.url, public=["/health", "/public/*"])


# -- Litestar ------------------------------------------------------------------


# The Litestar apps here leave the process's logging alone (logging_config=None):
# by default Litestar sets the root logger to INFO for every later test.


def litestar_app(server: JWKSServer, **plugin_options: Any) -> Any:
    from litestar import Litestar, Request, WebSocket, get, websocket

    from starlette_betterauth.litestar import BetterAuthPlugin, require_role

    @get("/me")
    async def me(request: Request[BetterAuthUser, Any, Any]) -> dict[str, str]:
        return {"id": request.user.id}

    @get("/admin", guards=[require_role("admin")])
    async def admin(request: Request[BetterAuthUser, Any, Any]) -> dict[str, str]:
        return {"admin": request.user.id}

    # The package's decorator, on a handler that takes no request.
    @get("/decorated/admin")
    @requires_role("admin")
    async def decorated_admin() -> dict[str, str]:
        return {"admin": "decorated"}

    @get("/decorated/me", sync_to_thread=False)
    @requires_role("user")
    def decorated_me(request: Request[BetterAuthUser, Any, Any]) -> dict[str, str]:
        return {"admin": request.user.id}

    @get("/health")
    async def health(request: Request[Any, Any, Any]) -> dict[str, bool]:
        return {"anonymous": request.state.user is None}

    @get("/public/admin", guards=[require_role("admin")])
    async def public_admin() -> str:
        return "unreachable"

    @websocket("/ws")
    async def ws(socket: WebSocket[BetterAuthUser, Any, Any]) -> None:
        await socket.accept()
        await socket.send_text(socket.user.id)
        await socket.close()

    @websocket("/ws/admin", guards=[require_role("admin")])
    async def ws_admin(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        await socket.close()

    @websocket("/ws/decorated")
    @requires_role("admin")
    async def ws_decorated(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        await socket.close()

    plugin = BetterAuthPlugin(
        base_url=server.url, public=["/health", "/public/*"], **plugin_options
    )
    routes = [me, admin, decorated_admin, decorated_me, health, public_admin]
    return Litestar([*routes, ws, ws_admin, ws_decorated], plugins=[plugin], logging_config=None)


def test_litestar(server: JWKSServer, issuer: Issuer) -> None:
    with threaded_uvicorn(litestar_app(server)) as address:
        check_http(address, issuer)
        check_http(address, issuer, admin_path="/decorated/admin", admin_id="decorated")
        check_websocket(address, issuer)
        with httpx.Client(base_url=f"http://{address}") as client:
            me = client.get("/decorated/me", headers=bearer(issuer.token(sub="u", role="user")))
            assert me.json() == {"admin": "u"}
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{address}/ws/decorated", additional_headers=bearer(issuer.token()))
        # requires_role on a websocket handler sends the middleware's denial response.
        assert refused.value.response.status_code == 403
        assert b"insufficient_scope" in (refused.value.response.body or b"")
    assert server.requests == 1


def test_litestar_ten_routes_share_one_key_set_and_warm_at_startup(
    server: JWKSServer, issuer: Issuer
) -> None:
    from litestar import Litestar, get

    from starlette_betterauth.litestar import BetterAuthPlugin

    def route(number: int) -> Any:
        @get(f"/r{number}")
        async def handler() -> int:
            return number

        return handler

    plugin = BetterAuthPlugin(base_url=server.url, warm_on_startup=True)
    app = Litestar([route(n) for n in range(10)], plugins=[plugin], logging_config=None)
    with threaded_uvicorn(cast(ASGIApp, app), lifespan="on") as address:
        assert server.requests == 1  # warmed before the first request
        with httpx.Client(base_url=f"http://{address}") as client:
            for number in range(10):
                answer = client.get(f"/r{number}", headers=bearer(issuer.token()))
                assert answer.json() == number
    assert server.request_paths == ["/api/auth/jwks"]


def test_litestar_guards_without_the_plugin(server: JWKSServer, issuer: Issuer) -> None:
    from litestar import Litestar, get
    from litestar.middleware import DefineMiddleware

    from starlette_betterauth.litestar import BetterAuthException, exception_handler, require_user

    @get("/me", guards=[require_user()])
    async def me() -> str:
        return "signed in"

    app = Litestar(
        [me],
        middleware=[
            DefineMiddleware(cast(Any, BetterAuthMiddleware), base_url=server.url, optional=True)
        ],
        exception_handlers={BetterAuthException: exception_handler},
        logging_config=None,
    )
    with (
        threaded_uvicorn(cast(ASGIApp, app)) as address,
        httpx.Client(base_url=f"http://{address}") as client,
    ):
        assert client.get("/me", headers=bearer(issuer.token())).text == "signed in"
        refused = client.get("/me")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json() == {
        "error": "unauthorized",
        "error_description": "this endpoint needs a bearer token",
    }


# -- Quart ---------------------------------------------------------------------


def quart_app(server: JWKSServer) -> Any:
    from quart import Quart, websocket

    from starlette_betterauth.quart import current_user

    app = Quart(__name__)

    @app.get("/me")
    async def me() -> dict[str, str]:
        user = current_user()
        assert user is not None
        return {"id": user.id}

    @app.get("/admin")
    @requires_role("admin")
    async def admin() -> dict[str, str]:
        user = current_user()
        assert user is not None
        return {"admin": user.id}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"anonymous": current_user() is None}

    @app.get("/public/admin")
    @requires_role("admin")
    async def public_admin() -> str:
        return "unreachable"

    @app.websocket("/ws")
    async def ws() -> None:
        user = current_user()
        assert user is not None
        await websocket.accept()
        await websocket.send(user.id)

    @app.websocket("/ws/admin")
    @requires_role("admin")
    async def ws_admin() -> None:
        await websocket.accept()

    app.asgi_app = behind_middleware(app.asgi_app, server)  # type: ignore[assignment]
    return app


def test_quart(server: JWKSServer, issuer: Issuer) -> None:
    with threaded_uvicorn(quart_app(server)) as address:
        check_http(address, issuer)
        check_websocket(address, issuer)


def test_quart_under_hypercorn(server: JWKSServer, issuer: Issuer) -> None:
    with threaded_hypercorn(quart_app(server)) as address:
        check_http(address, issuer)
        check_websocket(address, issuer)


# -- Django (ASGI) -------------------------------------------------------------


@pytest.fixture(scope="module")
def django_asgi() -> Any:
    import django
    from django.conf import settings
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    def me(request: HttpRequest) -> JsonResponse:  # a sync view
        assert isinstance(request.user, BetterAuthUser)
        return JsonResponse({"id": request.user.id})

    async def me_async(request: HttpRequest) -> JsonResponse:
        user = await request.auser()
        assert isinstance(user, BetterAuthUser)
        assert request.user is user
        return JsonResponse({"id": user.id})

    @requires_role("admin")
    async def admin(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"admin": request.user.id})

    @requires_role("admin")
    def admin_sync(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"admin": request.user.id})

    def health(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"anonymous": not request.user.is_authenticated})

    @requires_role("admin")
    def public_admin(request: HttpRequest) -> JsonResponse:
        return JsonResponse({})

    urls = ModuleType("django_urls")  # a URLconf: hashable, with urlpatterns
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("me", me),
        path("me-async", me_async),
        path("admin", admin),
        path("admin-sync", admin_sync),
        path("health", health),
        path("public/admin", public_admin),
    ]
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ROOT_URLCONF=urls,
            ALLOWED_HOSTS=["127.0.0.1"],
            SECRET_KEY="test-only",
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
            MIDDLEWARE=["starlette_betterauth.django.BetterAuthUserMiddleware"],
            DATABASES={},
            LOGGING_CONFIG=None,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def test_django(server: JWKSServer, issuer: Issuer, django_asgi: Any) -> None:
    with threaded_uvicorn(behind_middleware(django_asgi, server)) as address:
        check_http(address, issuer)
        check_http(address, issuer, admin_path="/admin-sync")
        with httpx.Client(base_url=f"http://{address}") as client:
            token = bearer(issuer.token(sub="async-1"))
            assert client.get("/me-async", headers=token).json() == {"id": "async-1"}
    assert server.requests == 1


def test_django_without_the_middleware_fails_closed(django_asgi: Any, issuer: Issuer) -> None:
    with (
        threaded_uvicorn(django_asgi) as address,
        httpx.Client(base_url=f"http://{address}") as client,
    ):
        answer = client.get("/me", headers=bearer(issuer.token()))
    assert answer.status_code == 500


def test_django_under_wsgi_is_refused_loudly(django_asgi: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    from starlette_betterauth.django import BetterAuthUserMiddleware

    request = RequestFactory().get("/me")  # a WSGI request: no ASGI scope

    @requires_role("admin")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("unreachable")

    with pytest.raises(RuntimeError, match="no ASGI scope"):
        view(request)
    middleware = BetterAuthUserMiddleware(lambda request: HttpResponse("unreachable"))
    with pytest.raises(ImproperlyConfigured, match="SyncTokenVerifier"):
        middleware(request)


# -- Falcon (ASGI) -------------------------------------------------------------


def falcon_app(server: JWKSServer) -> Any:
    import falcon
    import falcon.asgi

    class Me:
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            resp.media = {"id": req.scope["user"].id}

    class Admin:
        @requires_role("admin")
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            resp.media = {"admin": req.scope["user"].id}

    class Health:
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            resp.media = {"anonymous": req.scope["state"]["user"] is None}

    class Socket:
        async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
            await ws.accept()
            await ws.send_text(req.scope["user"].id)
            with contextlib.suppress(falcon.WebSocketDisconnected):
                await ws.receive_text()  # until the client closes

    class AdminSocket:
        @requires_role("admin")
        async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
            await ws.accept()

    app = falcon.asgi.App()
    app.add_route("/me", Me())
    app.add_route("/admin", Admin())
    app.add_route("/health", Health())
    app.add_route("/public/admin", Admin())
    app.add_route("/ws", Socket())
    app.add_route("/ws/admin", AdminSocket())
    return behind_middleware(app, server)


def test_falcon(server: JWKSServer, issuer: Issuer) -> None:
    with threaded_uvicorn(falcon_app(server)) as address:
        check_http(address, issuer)
        check_websocket(address, issuer)


# -- proxies and mounts ----------------------------------------------------------


def test_public_route_under_uvicorn_root_path(server: JWKSServer, issuer: Issuer) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def whoami(request: Request) -> JSONResponse:
        user = request.state.user
        return JSONResponse({"anonymous": True} if user is None else {"id": user.id})

    app = Starlette(routes=[Route("/health", whoami), Route("/me", whoami)])
    wrapped = BetterAuthMiddleware(app, base_url=server.url, public=["/health"])
    # A proxy strips /api and the server is told so: the app routes on /health.
    with (
        threaded_uvicorn(wrapped, root_path="/api") as address,
        httpx.Client(base_url=f"http://{address}") as client,
    ):
        assert client.get("/health").json() == {"anonymous": True}
        assert client.get("/me").status_code == 401
        me = client.get("/me", headers=bearer(issuer.token(sub="behind-proxy")))
        assert me.json() == {"id": "behind-proxy"}


# -- uvicorn's websocket implementations after a refusal ------------------------


@pytest.fixture
def uvicorn_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    return caplog


@pytest.mark.parametrize("ws", ["wsproto", "websockets-sansio"])
def test_refused_websocket_log_by_uvicorn_implementation(
    ws: str, server: JWKSServer, uvicorn_errors: pytest.LogCaptureFixture
) -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a refused websocket never reaches the app")

    app = BetterAuthMiddleware(echo, base_url=server.url)
    with threaded_uvicorn(app, ws=ws, log_config=None) as address:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{address}/ws", open_timeout=10)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"")["error"] == "unauthorized"
    logged = [r.getMessage() for r in uvicorn_errors.records if r.name == "uvicorn.error"]
    if ws == "wsproto":
        assert logged == []
    else:
        # uvicorn's default implementation logs this after every denial response
        # (Kludex/uvicorn#3138); when this fails, it no longer does: update docs/frameworks.md.
        assert logged == ["ASGI callable returned without completing handshake."]

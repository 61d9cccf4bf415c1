"""The example apps: every route through ASGITransport, then for real under uvicorn.

Both examples read ``BETTER_AUTH_URL`` and ``CORS_ORIGINS``; here they point at
the testing kit's JWKSServer on 127.0.0.1 and get tokens from its Issuer.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from _helpers import asgi_client, bearer
from _serving import ROOT, denial, lifespan, start_uvicorn, websocket_session
from starlette.types import ASGIApp
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from starlette_betterauth.testing import Issuer, JWKSServer

pytestmark = pytest.mark.anyio

EXAMPLES = ROOT / "examples"
NAMES = ["starlette_app", "fastapi_app"]
ORIGIN = "http://127.0.0.1:5173"
USER_ID = "uNoQAdoV9LthHdH9Z7KjkzWB5eA85RmZ"
DENIED_ADMIN = "this endpoint needs the 'admin' role"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def factory(name: str) -> Callable[..., ASGIApp]:
    create_app: Callable[..., ASGIApp] = load(name).create_app
    return create_app


@pytest.fixture(params=NAMES)
def example(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def app(server: JWKSServer, example: str) -> ASGIApp:
    """The example behind the ``client`` fixture, configured for the test key server."""
    return factory(example)(base_url=server.url, cors_origins=[ORIGIN])


async def test_public_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/public")
    assert response.status_code == 200
    assert response.json() == {"message": "anyone may read this"}


async def test_me_answers_the_claims(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.token(user_id=USER_ID, email="ada@example.com", name="Ada", role="user,admin")
    response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("id", "email", "name", "roles", "scopes")} == {
        "id": USER_ID,
        "email": "ada@example.com",
        "name": "Ada",
        "roles": ["admin", "user"],
        "scopes": [],
    }
    assert body["claims"]["sub"] == USER_ID
    assert body["claims"]["iss"] == issuer.base_url
    assert body["kind"] == "jwt"
    anonymous = await client.get("/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("claims", "status", "challenge"),
    [
        (None, 401, "Bearer"),
        (
            {"role": "user"},
            403,
            f'Bearer error="insufficient_scope", error_description="{DENIED_ADMIN}"',
        ),
        ({"role": "admin"}, 200, None),
        ({"role": "user,admin"}, 200, None),
        ({"role": "admin", "banned": True}, 403, "Bearer"),
    ],
    ids=["anonymous", "wrong-role", "right-role", "multi-role", "banned"],
)
async def test_admin(
    client: httpx.AsyncClient,
    issuer: Issuer,
    claims: dict[str, Any] | None,
    status: int,
    challenge: str | None,
) -> None:
    token = None if claims is None else issuer.token(name="Ada", **claims)
    response = await client.get("/admin", headers=bearer(token))
    assert response.status_code == status
    assert response.headers.get("www-authenticate") == challenge
    if status == 200:
        assert response.json() == {"message": "welcome, admin Ada"}


async def test_websocket_echoes_with_the_user_id(
    server: JWKSServer, issuer: Issuer, example: str
) -> None:
    app = factory(example)(base_url=server.url)
    token = issuer.token(user_id=USER_ID, role="user")
    sent = await websocket_session(app, "/ws", token=token, texts=["hello", "again"])
    assert sent[0]["type"] == "websocket.accept"
    echoes = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    assert echoes == [{"user": USER_ID, "echo": "hello"}, {"user": USER_ID, "echo": "again"}]
    status, headers, _ = denial(await websocket_session(app, "/ws"))
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"


async def test_cors_preflight_passes_and_refusals_are_readable(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options(
        "/admin",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = await client.get("/admin", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert refused.headers["access-control-expose-headers"] == "WWW-Authenticate"
    stranger = await client.options(
        "/admin",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert stranger.status_code == 400
    assert "access-control-allow-origin" not in stranger.headers


async def test_settings_come_from_the_environment(
    server: JWKSServer, issuer: Issuer, example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETTER_AUTH_URL", server.url)
    monkeypatch.setenv("CORS_ORIGINS", f" {ORIGIN} , http://localhost:5173,")
    app = factory(example)()
    async with asgi_client(app) as c:
        me = await c.get("/me", headers=bearer(issuer.token(user_id=USER_ID)))
        assert me.json()["id"] == USER_ID
        for origin in (ORIGIN, "http://localhost:5173"):
            preflight = await c.options(
                "/me", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
            )
            assert preflight.headers["access-control-allow-origin"] == origin
    monkeypatch.delenv("CORS_ORIGINS")
    app = factory(example)()
    async with asgi_client(app) as c:
        no_cors = await c.options(
            "/me", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert no_cors.status_code == 401
        assert "access-control-allow-origin" not in no_cors.headers


async def test_fastapi_docs_are_public_and_editor_uses_the_decorator(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = factory("fastapi_app")(base_url=server.url)
    async with asgi_client(app) as c:
        assert (await c.get("/docs")).status_code == 200
        schema = (await c.get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["BetterAuth"]["scheme"] == "bearer"
        assert schema["paths"]["/editor"]["get"]["security"] == [{"BetterAuth": []}]
        assert "parameters" not in schema["paths"]["/editor"]["get"]
        editor = await c.get("/editor", headers=bearer(issuer.token(role="editor")))
        assert editor.json() == {"message": "welcome, editor"}
        user = await c.get("/editor", headers=bearer(issuer.token(role="user")))
        assert user.status_code == 403


# -- session cookies (SESSION_COOKIES=1) ------------------------------------------------------


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    """The Cookie header a browser sends with ``cookies``."""
    return {"cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


async def test_notes_take_a_note_from_a_token(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = bearer(issuer.token(user_id=USER_ID))
    response = await client.post("/notes", json={"note": "hello"}, headers=token)
    assert (response.status_code, response.json()) == (200, {"user": USER_ID, "note": "hello"})
    for bad in ({"note": 1}, ["note"], {"note": "x" * 501}):
        assert (await client.post("/notes", json=bad, headers=token)).status_code == 422
    garbage = await client.post(
        "/notes", content=b"{", headers={**token, "content-type": "application/json"}
    )
    assert garbage.status_code == 422
    assert (await client.post("/notes", json={"note": "hello"})).status_code == 401


async def test_session_cookies_from_the_trusted_page(
    server: JWKSServer, issuer: Issuer, example: str
) -> None:
    app = factory(example)(base_url=server.url, cors_origins=[ORIGIN], session_cookies=True)
    session = issuer.session(USER_ID, role="user")
    cookies = cookie_header(issuer.session_cookies(session))
    page = {"origin": ORIGIN}
    # The lifespan closes the get-session client the stale cookie below makes it open.
    async with lifespan(app), asgi_client(app) as c:
        me = await c.get("/me", headers={**cookies, **page})
        assert me.status_code == 200
        assert (me.json()["kind"], me.json()["id"]) == ("session_cookie", USER_ID)
        assert me.headers["access-control-allow-origin"] == ORIGIN
        assert me.headers["access-control-allow-credentials"] == "true"
        preflight = await c.options(
            "/notes",
            headers={
                **page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        note = await c.post("/notes", json={"note": "hi"}, headers={**cookies, **page})
        assert (note.status_code, note.json()) == (200, {"user": USER_ID, "note": "hi"})
        # The cookie is sent by the browser whoever made the page: unsafe requests from
        # another origin, or from nowhere said, are refused; a bearer token is not.
        for origin in ({"origin": "http://evil.example"}, {}):
            refused = await c.post("/notes", json={"note": "hi"}, headers={**cookies, **origin})
            assert refused.status_code == 403
        token = bearer(issuer.token(user_id=USER_ID))
        evil = {"origin": "http://evil.example"}
        anywhere = await c.post("/notes", json={"note": "hi"}, headers={**token, **evil})
        assert anywhere.status_code == 200
        # Signed out: Better Auth clears the cookies; a copied pair with a stale cache
        # falls back to get-session, which refuses it.
        issuer.revoke_session(session)
        stale = issuer.session_cookies(session, session_data=False)
        stale.update(issuer.session_data_cookie(session, issued_at=time.time() - 600))
        gone = await c.get("/me", headers={**cookie_header(stale), **page})
        assert gone.status_code == 401
        assert (await c.get("/me", headers=page)).status_code == 401
    assert server.session_requests == 1


async def test_session_cookies_are_off_by_default(
    server: JWKSServer, issuer: Issuer, example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cookies = cookie_header(issuer.session_cookies(issuer.session(USER_ID)))
    app = factory(example)(base_url=server.url, cors_origins=[ORIGIN])
    async with asgi_client(app) as c:
        response = await c.get("/me", headers={**cookies, "origin": ORIGIN})
        assert response.status_code == 401
        assert "access-control-allow-credentials" not in response.headers
    monkeypatch.setenv("BETTER_AUTH_URL", server.url)
    monkeypatch.setenv("SESSION_COOKIES", "1")
    monkeypatch.delenv("CORS_ORIGINS", raising=False)
    app = factory(example)()
    async with asgi_client(app) as c:
        assert (await c.get("/me", headers=cookies)).json()["kind"] == "session_cookie"
        # Without CORS_ORIGINS only the base URL's pages are trusted with the cookie.
        here = await c.post("/notes", json={"note": "x"}, headers={**cookies, "origin": server.url})
        assert here.status_code == 200
        there = await c.post("/notes", json={"note": "x"}, headers={**cookies, "origin": ORIGIN})
        assert there.status_code == 403


def test_module_level_app_needs_no_server_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BETTER_AUTH_URL", raising=False)
    for name in NAMES:
        assert callable(load(name).app)


# -- under a real uvicorn -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_example_under_uvicorn(name: str, tmp_path: Path) -> None:
    issuer = Issuer()
    with JWKSServer(issuer) as keys:
        env = {"BETTER_AUTH_URL": keys.url, "CORS_ORIGINS": ORIGIN, "SESSION_COOKIES": "1"}
        with start_uvicorn(f"{name}:app", app_dir=EXAMPLES, env=env) as uvicorn:
            # The key set was fetched during startup (warm_on_startup).
            assert keys.requests == 1
            base, address = uvicorn.url, uvicorn.address
            user = bearer(issuer.token(user_id=USER_ID, role="user"))
            admin = bearer(issuer.token(user_id=USER_ID, role="user,admin"))
            with httpx.Client(base_url=base, timeout=10) as http:
                assert http.get("/public").status_code == 200
                assert http.get("/me").status_code == 401
                assert http.get("/me", headers=user).json()["id"] == USER_ID
                assert http.get("/admin", headers=user).status_code == 403
                assert http.get("/admin", headers=admin).status_code == 200
                preflight = http.options(
                    "/me", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
                )
                assert preflight.headers["access-control-allow-origin"] == ORIGIN
                # A browser on ORIGIN, signed in to the same site, with its cookies.
                cookies = cookie_header(issuer.session_cookies(issuer.session(USER_ID)))
                page = {**cookies, "Origin": ORIGIN}
                assert http.get("/me", headers=page).json()["kind"] == "session_cookie"
                note = http.post("/notes", json={"note": "over the wire"}, headers=page)
                assert note.json() == {"user": USER_ID, "note": "over the wire"}
            with connect(f"ws://{address}/ws", additional_headers=user, open_timeout=10) as ws:
                ws.send("over the wire")
                assert json.loads(ws.recv(timeout=10)) == {"user": USER_ID, "echo": "over the wire"}
            with pytest.raises(InvalidStatus) as refused:
                connect(f"ws://{address}/ws", open_timeout=10)
            assert refused.value.response.status_code == 401
            assert refused.value.response.headers["WWW-Authenticate"] == "Bearer"
            # Every token above was checked against the one key set fetched at startup.
            assert keys.requests == 1

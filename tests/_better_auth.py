"""The real Better Auth server of ``examples/better-auth-server``, for the integration tests.

``server_fixture(name, **env)`` makes a module-scoped fixture that starts ``node server.mjs`` on
a free loopback port with ``env`` added to its environment, and stops it by its PID afterwards.
:class:`BetterAuthAPI` drives that server through its real HTTP API: sign-up, sign-in, JWTs from
``/token`` and the ``set-auth-jwt`` header, the admin plugin's ``set-role`` and the server's
development-only ``/dev/*`` endpoints. :func:`make_app` is a small Starlette app behind
:class:`BetterAuthMiddleware` (``_serving.start_uvicorn`` serves :func:`create_app` for real).

Without Node or the server's ``node_modules`` the fixtures skip, saying why; with
``BETTER_AUTH_REQUIRE_SERVER=1`` (as in CI) they fail instead, so the integration tests can
never be skipped silently.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import pytest
from _helpers import bearer
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from starlette_betterauth import BetterAuthMiddleware, BetterAuthUser, TokenVerifier

__all__ = [
    "ADMIN_EMAIL",
    "PASSWORD",
    "SERVER_DIR",
    "Account",
    "BetterAuthAPI",
    "BetterAuthServer",
    "bearer",
    "create_app",
    "make_app",
    "server_fixture",
    "unique_email",
    "unverified_part",
]

REPO = Path(__file__).resolve().parent.parent
SERVER_DIR = REPO / "examples" / "better-auth-server"
REQUIRE_ENV = "BETTER_AUTH_REQUIRE_SERVER"
#: Signs up with role "admin" on every server these tests start (the server's ADMIN_EMAILS).
ADMIN_EMAIL = "admin@example.com"
PASSWORD = "correct-horse-battery"
SESSION_COOKIE = "better-auth.session_token"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def server_unavailable() -> str | None:
    """Why the real server cannot be started here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (the real Better Auth server needs `node`)"
    if not (SERVER_DIR / "node_modules" / "better-auth").is_dir():
        return f"the server's Node packages are not installed: run `npm ci` in {SERVER_DIR}"
    return None


def require_server() -> None:
    """Skip the calling test (fail it when ``BETTER_AUTH_REQUIRE_SERVER=1``) without Node."""
    reason = server_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text("utf-8", "replace")[-limit:]
    except OSError:
        return ""


def _wait_for_line(
    process: subprocess.Popen[bytes], path: Path, pattern: re.Pattern[str], what: str
) -> re.Match[str]:
    """Poll ``path`` (a child's output file) until a line matches ``pattern``, bounded."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        for line in _tail(path, 1 << 20).splitlines():
            match = pattern.search(line)
            if match is not None:
                return match
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start (exit code {process.poll()})")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a child by its PID: SIGTERM, then SIGKILL if it lingers; always reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


# -- the server process --------------------------------------------------------------------------


class BetterAuthServer:
    """One running ``node server.mjs``; ``ready`` is the JSON line it printed when listening."""

    def __init__(self, process: subprocess.Popen[bytes], ready: Mapping[str, Any]) -> None:
        self.process = process
        self.ready = ready
        self.url: str = ready["url"]
        self.alg: str = ready["alg"]
        self.jwks_url: str = ready["jwksUrl"]
        self.base_path: str = ready["basePath"]
        self.issuer: str = ready["issuer"]
        self.audience: str | list[str] = ready["audience"]

    def api_url(self, path: str) -> str:
        """The URL of a Better Auth endpoint, e.g. ``api_url("/token")``."""
        base = "" if self.base_path == "/" else self.base_path
        return f"{self.url}{base}{path}"


@contextmanager
def running_server(**env: str) -> Iterator[BetterAuthServer]:
    """Start ``node server.mjs`` with ``env`` on a free 127.0.0.1 port; stop it on exit."""
    node = shutil.which("node")
    assert node is not None
    with tempfile.TemporaryDirectory(prefix="better-auth-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        full_env = {
            **os.environ,
            "PORT": "0",
            "ADMIN_EMAILS": ADMIN_EMAIL,
            "BETTER_AUTH_SECRET": "integration-tests-secret-" + uuid.uuid4().hex,
            **env,
        }
        full_env.pop("BETTER_AUTH_URL", None)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [node, "server.mjs"],
                cwd=SERVER_DIR,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        try:
            try:
                match = _wait_for_line(
                    process, out, re.compile(r'^\{"ready":true.*\}$'), "the Better Auth server"
                )
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its stderr:\n{_tail(err)}") from None
            yield BetterAuthServer(process, json.loads(match.group(0)))
        finally:
            stop_process(process)


def server_fixture(name: str, **env: str) -> Any:
    """A module-scoped fixture called ``name`` yielding a server started with ``env``.

    Example: ``default_server = server_fixture("default_server", DEV_ENDPOINTS="1")``.
    """

    def fixture() -> Iterator[BetterAuthServer]:
        require_server()
        with running_server(**env) as server:
            yield server

    fixture.__name__ = name
    return pytest.fixture(scope="module", name=name)(fixture)


# -- the server's HTTP API -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """A signed-in user: ``session_token`` is the opaque bearer-plugin token, ``cookie`` the
    session cookie's value."""

    email: str
    user_id: str
    role: str | None
    session_token: str
    cookie: str


def unique_email(prefix: str = "user") -> str:
    """A fresh address, since the servers outlive a single test."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def _json(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, (
        f"{response.request.method} {response.request.url.path}: "
        f"{response.status_code} {response.text[:300]}"
    )
    document: dict[str, Any] = response.json()
    return document


class BetterAuthAPI:
    """Calls a running server's real HTTP API (use ``async with``).

    The client keeps no cookies of its own: each :class:`Account` carries its session, so
    several users can be driven side by side without one's cookie leaking into another's call.
    """

    def __init__(self, server: BetterAuthServer) -> None:
        self.server = server
        refuse_all = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self.http = httpx.AsyncClient(timeout=15.0, cookies=refuse_all)

    async def __aenter__(self) -> BetterAuthAPI:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    def _account(self, response: httpx.Response) -> Account:
        body = _json(response)
        user = body["user"]
        cookie = response.cookies.get(SESSION_COOKIE)
        assert cookie, "no session cookie was set"
        return Account(
            email=user["email"],
            user_id=user["id"],
            role=user.get("role"),
            session_token=response.headers["set-auth-token"],
            cookie=cookie,
        )

    async def sign_up(self, email: str | None = None, *, name: str = "Test User") -> Account:
        """``POST /sign-up/email`` for a new user."""
        response = await self.http.post(
            self.server.api_url("/sign-up/email"),
            json={"email": email or unique_email(), "password": PASSWORD, "name": name},
        )
        return self._account(response)

    async def sign_in(self, email: str) -> Account:
        """``POST /sign-in/email`` for an existing user."""
        response = await self.http.post(
            self.server.api_url("/sign-in/email"), json={"email": email, "password": PASSWORD}
        )
        return self._account(response)

    async def admin(self) -> Account:
        """The server's bootstrap admin (``ADMIN_EMAIL``), signed up on first use."""
        response = await self.http.post(
            self.server.api_url("/sign-in/email"),
            json={"email": ADMIN_EMAIL, "password": PASSWORD},
        )
        if response.status_code == 200:
            return self._account(response)
        return await self.sign_up(ADMIN_EMAIL, name="Admin")

    async def jwt(self, account: Account) -> str:
        """A JWT from ``GET /token``, authenticated by the opaque session token (bearer plugin)."""
        response = await self.http.get(
            self.server.api_url("/token"), headers=bearer(account.session_token)
        )
        token: str = _json(response)["token"]
        return token

    async def jwt_via_cookie(self, account: Account) -> str:
        """A JWT from ``GET /token``, authenticated by the session cookie as a browser would."""
        response = await self.http.get(
            self.server.api_url("/token"), headers={"cookie": f"{SESSION_COOKIE}={account.cookie}"}
        )
        token: str = _json(response)["token"]
        return token

    async def session_jwt(self, account: Account) -> str:
        """The JWT of the ``set-auth-jwt`` header of ``GET /get-session``."""
        response = await self.http.get(
            self.server.api_url("/get-session"), headers=bearer(account.session_token)
        )
        assert _json(response)["user"]["id"] == account.user_id
        return response.headers["set-auth-jwt"]

    async def set_role(self, admin: Account, user_id: str, role: str | list[str]) -> str:
        """The admin plugin's ``POST /admin/set-role``; returns the role as stored."""
        response = await self.http.post(
            self.server.api_url("/admin/set-role"),
            headers=bearer(admin.session_token),
            json={"userId": user_id, "role": role},
        )
        stored: str = _json(response)["user"]["role"]
        return stored

    async def jwks(self) -> dict[str, Any]:
        """The key set, from the URL the server announced."""
        return _json(await self.http.get(self.server.jwks_url))

    async def _dev(self, path: str, body: Mapping[str, Any], **headers: str) -> dict[str, Any]:
        response = await self.http.post(f"{self.server.url}{path}", json=body, headers=headers)
        return _json(response)

    async def rotate_keys(self) -> str:
        """``POST /dev/rotate-keys``: a new signing key now; returns its kid."""
        kid: str = (await self._dev("/dev/rotate-keys", {}))["kid"]
        return kid

    async def drop_key(self, kid: str) -> None:
        """``POST /dev/drop-keys``: take the key ``kid`` out of the key set."""
        assert (await self._dev("/dev/drop-keys", {"kid": kid}))["dropped"] == [kid]

    async def make_me_admin(self, account: Account) -> str:
        """``POST /dev/make-me-admin`` as ``account``; returns the new role string."""
        user = (await self._dev("/dev/make-me-admin", {}, **bearer(account.session_token)))["user"]
        role: str = user["role"]
        return role


# -- an app using the middleware -----------------------------------------------------------------


def _user(request: Request) -> BetterAuthUser:
    user: BetterAuthUser = request.state.user
    return user


async def public(request: Request) -> JSONResponse:
    """Reachable without a token."""
    return JSONResponse({"public": True})


async def me(request: Request) -> JSONResponse:
    """The caller as the middleware saw it."""
    user = _user(request)
    return JSONResponse(
        {
            "id": user.id,
            "email": user.email,
            "roles": sorted(user.roles),
            "scopes": sorted(request.auth.scopes),
            "claims": dict(user.claims),
        }
    )


@requires("role:admin")
async def admin(request: Request) -> JSONResponse:
    """Admins only (Starlette's own ``requires`` over the middleware's credentials)."""
    return JSONResponse({"admin": _user(request).id})


@requires("role:editor")
async def editor(request: Request) -> JSONResponse:
    """Editors only."""
    return JSONResponse({"editor": _user(request).id})


async def ws(websocket: WebSocket) -> None:
    """Greets the authenticated user over a websocket."""
    user: BetterAuthUser = websocket.state.user
    await websocket.accept()
    await websocket.send_json({"id": user.id, "roles": sorted(user.roles)})
    await websocket.close()


def make_app(verifier: TokenVerifier | None = None, **options: Any) -> Starlette:
    """A Starlette app behind BetterAuthMiddleware (``/public`` needs no token)."""
    routes = [
        Route("/public", public),
        Route("/me", me),
        Route("/admin", admin),
        Route("/editor", editor),
        WebSocketRoute("/ws", ws),
    ]
    middleware = Middleware(BetterAuthMiddleware, verifier=verifier, public=["/public"], **options)
    return Starlette(routes=routes, middleware=[middleware])


def create_app() -> Starlette:
    """The app configured from ``BETTER_AUTH_URL`` alone, for ``uvicorn --factory``."""
    return make_app()


def unverified_part(token: str, index: int) -> dict[str, Any]:
    """Segment ``index`` (0 header, 1 payload) of a compact JWS, decoded but not verified."""
    segment = token.split(".")[index]
    document: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return document

"""The real Better Auth server of ``examples/better-auth-server``, for the integration tests.

``server_fixture(name, **env)`` makes a module-scoped fixture that starts ``node server.mjs`` on
a free loopback port with ``env`` added to its environment, and stops it by its PID afterwards
(:meth:`BetterAuthServer.stop` stops it sooner, to test an app whose Better Auth is down).
:class:`BetterAuthAPI` drives that server through its real HTTP API: sign-up, sign-in (each
:class:`Account` holds the raw and the signed session token and the browser's cookies,
``session_token`` and ``session_data`` with its chunks), sign-out, get-session, JWTs from
``/token`` and the ``set-auth-jwt`` header, the admin plugin's ``set-role``, bans and session
revocation, and the server's development-only ``/dev/*`` endpoints: key rotation, user updates
that keep the sessions, the record of the get-session calls the server handled
(:class:`GetSessionCall`) and get-session faults. :func:`make_app` is a small Starlette app
behind :class:`BetterAuthMiddleware` (``_serving.start_uvicorn`` serves :func:`create_app` for
real).

Without Node or the server's ``node_modules`` the fixtures skip, saying why; with
``BETTER_AUTH_REQUIRE_SERVER=1`` (as in CI) they fail instead, so the integration tests can
never be skipped silently.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, TypeVar

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
    "SESSION_COOKIE",
    "SESSION_DATA_COOKIE",
    "Account",
    "BetterAuthAPI",
    "BetterAuthServer",
    "GetSessionCall",
    "bearer",
    "create_app",
    "iso_seconds",
    "make_app",
    "server_fixture",
    "session_data_cookies",
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
#: The session cookie cache; a large value comes as chunks named ``<name>.0``, ``<name>.1``, ...
SESSION_DATA_COOKIE = "better-auth.session_data"
_SESSION_DATA_NAME = re.compile(r"^better-auth\.session_data(?:\.(\d+))?$")
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_Server = TypeVar("_Server")


def server_unavailable(package: str = "better-auth") -> str | None:
    """Why a Node server needing ``package`` cannot be started here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (the real Better Auth server needs `node`)"
    if not (SERVER_DIR / "node_modules" / package).is_dir():
        return f"the server's Node packages are not installed: run `npm ci` in {SERVER_DIR}"
    return None


def require_server(package: str = "better-auth") -> None:
    """Skip the calling test (fail it when ``BETTER_AUTH_REQUIRE_SERVER=1``) without Node."""
    reason = server_unavailable(package)
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

    @property
    def running(self) -> bool:
        """Whether the Node process is still alive."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server now (by its PID), e.g. to see an app answer with Better Auth down.

        Its port then refuses connections. Stopping twice is harmless.
        """
        stop_process(self.process)


@contextmanager
def node_server(script: str, what: str, env: Mapping[str, str]) -> Iterator[tuple[Any, ...]]:
    """Run ``node <script>`` from the server folder on a free 127.0.0.1 port; stop it on exit.

    Yields the process and the JSON object of its ``{"ready":true,...}`` line; ``env`` is added
    to this process's environment (without ``BETTER_AUTH_URL``, and with a fresh secret).
    """
    node = shutil.which("node")
    assert node is not None
    with tempfile.TemporaryDirectory(prefix="node-server-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        full_env = {
            **os.environ,
            "PORT": "0",
            "BETTER_AUTH_SECRET": "integration-tests-secret-" + uuid.uuid4().hex,
            **env,
        }
        full_env.pop("BETTER_AUTH_URL", None)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [node, script],
                cwd=SERVER_DIR,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        try:
            try:
                match = _wait_for_line(process, out, re.compile(r'^\{"ready":true.*\}$'), what)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its stderr:\n{_tail(err)}") from None
            yield process, json.loads(match.group(0))
        finally:
            stop_process(process)


def module_fixture(name: str, start: Callable[[], AbstractContextManager[_Server]]) -> Any:
    """A module-scoped fixture called ``name`` yielding what ``start()`` enters."""

    def fixture() -> Iterator[_Server]:
        with start() as server:
            yield server

    fixture.__name__ = name
    return pytest.fixture(scope="module", name=name)(fixture)


@contextmanager
def running_server(**env: str) -> Iterator[BetterAuthServer]:
    """Start ``node server.mjs`` with ``env`` on a free 127.0.0.1 port; stop it on exit."""
    require_server()
    with node_server(
        "server.mjs", "the Better Auth server", {"ADMIN_EMAILS": ADMIN_EMAIL, **env}
    ) as (process, ready):
        yield BetterAuthServer(process, ready)


def server_fixture(name: str, **env: str) -> Any:
    """A module-scoped fixture called ``name`` yielding a server started with ``env``.

    Example: ``default_server = server_fixture("default_server", DEV_ENDPOINTS="1")``.
    """
    return module_fixture(name, lambda: running_server(**env))


# -- the server's HTTP API -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """A signed-in user (one session), with every credential Better Auth handed out.

    Attributes:
        session_token: the *signed* session token, ``<token>.<signature>``, from the
            ``set-auth-token`` header (what the bearer plugin gives a client to send).
        cookie: the ``better-auth.session_token`` cookie's value as the browser sends it:
            the signed token with the signature's ``=`` as ``%3D``.
        token: the raw session token (32 characters, no dot) of the sign-in answer's body.
        session_data: the ``better-auth.session_data`` cookie(s) as ``(name, value)`` pairs,
            the chunks ``.0``, ``.1``, ... in order; empty when the server keeps no cookie cache.
    """

    email: str
    user_id: str
    role: str | None
    session_token: str
    cookie: str
    token: str
    session_data: tuple[tuple[str, str], ...]

    @property
    def signed_token(self) -> str:
        """The signed session token (``session_token``)."""
        return self.session_token

    @property
    def session_data_jwt(self) -> str:
        """The ``session_data`` JWT, its chunks joined."""
        assert self.session_data, "the server set no session_data cookie"
        return "".join(value for _, value in self.session_data)

    @property
    def session_data_claims(self) -> dict[str, Any]:
        """The ``session_data`` JWT's claims, decoded but not verified."""
        return unverified_part(self.session_data_jwt, 1)

    @property
    def session_id(self) -> str:
        """The session's id (not a credential), from the ``session_data`` cookie."""
        session_id: str = self.session_data_claims["session"]["id"]
        return session_id

    @property
    def session_expires_at(self) -> float:
        """When the session expires, in Unix seconds, from the ``session_data`` cookie."""
        return iso_seconds(self.session_data_claims["session"]["expiresAt"])

    def cookies(self, *, session_data: bool = True) -> dict[str, str]:
        """The browser's Better Auth cookies: ``session_token`` and (unless ``session_data``
        is false) the ``session_data`` cookie or its chunks."""
        cookies = {SESSION_COOKIE: self.cookie}
        if session_data:
            cookies.update(self.session_data)
        return cookies

    def cookie_header(
        self, *, session_data: bool = True, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """A ``Cookie`` header as the browser sends it, ``extra`` cookies first."""
        cookies = {**(extra or {}), **self.cookies(session_data=session_data)}
        return {"cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a response body or a log line: the raw session
        token (every other form of it contains it) and the ``session_data`` signature."""
        found = [self.token]
        if self.session_data:
            found.append(self.session_data_jwt.rsplit(".", 1)[-1])
        return tuple(found)


@dataclass(frozen=True, slots=True)
class GetSessionCall:
    """One ``GET /get-session`` the server handled (``POST /dev/get-session-calls``).

    ``via`` is ``"cookie"``, ``"bearer"`` or ``"none"``; ``token`` the raw session token
    presented (``None`` without one); ``cookies`` and ``headers`` the names the request
    carried; ``status`` the status answered.
    """

    n: int
    via: str
    token: str | None
    signed: bool
    cookies: tuple[str, ...]
    headers: tuple[str, ...]
    status: int | None


def iso_seconds(value: str) -> float:
    """An ISO 8601 time as Better Auth writes it (``2026-12-07T06:01:40.664Z``), in Unix seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def session_data_cookies(response: httpx.Response) -> tuple[tuple[str, str], ...]:
    """The ``session_data`` cookie or its chunks a response sets, in order."""
    found: list[tuple[int, str, str]] = []
    for name, value in response.cookies.items():
        match = _SESSION_DATA_NAME.match(name)
        if match is not None and value:
            found.append((-1 if match.group(1) is None else int(match.group(1)), name, value))
    return tuple((name, value) for _, name, value in sorted(found))


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
        #: Every account signed up or in through this client, for checks that none of their
        #: secrets leaked.
        self.accounts: list[Account] = []

    async def __aenter__(self) -> BetterAuthAPI:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    def _account(self, response: httpx.Response) -> Account:
        body = _json(response)
        user = body["user"]
        cookie = response.cookies.get(SESSION_COOKIE)
        assert cookie, "no session cookie was set"
        account = Account(
            email=user["email"],
            user_id=user["id"],
            role=user.get("role"),
            session_token=response.headers["set-auth-token"],
            cookie=cookie,
            token=body["token"],
            session_data=session_data_cookies(response),
        )
        self.accounts.append(account)
        return account

    async def sign_up(self, email: str | None = None, *, name: str = "Test User") -> Account:
        """``POST /sign-up/email`` for a new user."""
        response = await self.http.post(
            self.server.api_url("/sign-up/email"),
            json={"email": email or unique_email(), "password": PASSWORD, "name": name},
        )
        return self._account(response)

    async def sign_in(self, email: str) -> Account:
        """``POST /sign-in/email`` for an existing user: a new session."""
        response = await self.http.post(
            self.server.api_url("/sign-in/email"), json={"email": email, "password": PASSWORD}
        )
        return self._account(response)

    async def sign_in_status(self, email: str) -> tuple[int, str | None]:
        """Try ``POST /sign-in/email``: the status and the error ``code`` (``BANNED_USER``...)."""
        response = await self.http.post(
            self.server.api_url("/sign-in/email"), json={"email": email, "password": PASSWORD}
        )
        if response.status_code == 200:
            self.accounts.append(self._account(response))
            return 200, None
        code: str | None = response.json().get("code")
        return response.status_code, code

    async def sign_out(self, account: Account) -> None:
        """``POST /sign-out`` as a browser does (the cookies and its ``Origin``): the session
        is deleted on the server."""
        response = await self.http.post(
            self.server.api_url("/sign-out"),
            headers={**account.cookie_header(), "origin": self.server.url},
        )
        assert _json(response) == {"success": True}

    async def get_session(self, headers: Mapping[str, str]) -> dict[str, Any] | None:
        """``GET /get-session`` with ``headers`` (a cookie or a bearer token): its answer."""
        response = await self.http.get(self.server.api_url("/get-session"), headers=headers)
        assert response.status_code == 200, response.text[:300]
        answer: dict[str, Any] | None = response.json()
        return answer

    async def refresh_session_data(self, account: Account) -> Account:
        """``account`` with the ``session_data`` cookie a browser gets next: get-session with
        the ``session_token`` cookie alone answers the session as stored now and sets it."""
        response = await self.http.get(
            self.server.api_url("/get-session"),
            headers=account.cookie_header(session_data=False),
        )
        assert _json(response)["session"]["token"] == account.token
        fresh = dataclasses.replace(account, session_data=session_data_cookies(response))
        assert fresh.session_data, "get-session set no session_data cookie"
        self.accounts.append(fresh)
        return fresh

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

    async def ban(self, admin: Account, user_id: str, reason: str = "testing") -> None:
        """The admin plugin's ``POST /admin/ban-user``: banned, and every session deleted."""
        response = await self.http.post(
            self.server.api_url("/admin/ban-user"),
            headers=bearer(admin.session_token),
            json={"userId": user_id, "banReason": reason},
        )
        assert _json(response)["user"]["banned"] is True

    async def unban(self, admin: Account, user_id: str) -> None:
        """The admin plugin's ``POST /admin/unban-user``."""
        response = await self.http.post(
            self.server.api_url("/admin/unban-user"),
            headers=bearer(admin.session_token),
            json={"userId": user_id},
        )
        assert _json(response)["user"]["banned"] is False

    async def revoke_sessions(self, admin: Account, user_id: str) -> None:
        """The admin plugin's ``POST /admin/revoke-user-sessions``: every session deleted."""
        response = await self.http.post(
            self.server.api_url("/admin/revoke-user-sessions"),
            headers=bearer(admin.session_token),
            json={"userId": user_id},
        )
        assert _json(response) == {"success": True}

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

    async def update_user(
        self,
        user_id: str,
        *,
        banned: bool | None = None,
        ban_reason: str | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        """``POST /dev/update-user``: write the user row and keep its sessions (the admin
        plugin's ban deletes them), e.g. a live session whose user is banned."""
        body: dict[str, Any] = {"userId": user_id}
        if banned is not None:
            body["banned"] = banned
            body["banReason"] = ban_reason if banned else None
        if role is not None:
            body["role"] = role
        user: dict[str, Any] = (await self._dev("/dev/update-user", body))["user"]
        return user

    async def get_session_mark(self) -> int:
        """The number of the last get-session call the server handled, to pass as ``since``."""
        count: int = (await self._dev("/dev/get-session-calls", {}))["count"]
        return count

    async def get_session_calls(
        self, *, since: int = 0, token: str | None = None
    ) -> list[GetSessionCall]:
        """The get-session calls the server handled after call number ``since``, only those
        presenting the raw session ``token`` when it is given (``POST /dev/get-session-calls``)."""
        document = await self._dev("/dev/get-session-calls", {})
        calls = [
            GetSessionCall(
                n=call["n"],
                via=call["via"],
                token=call["token"],
                signed=call["signed"],
                cookies=tuple(call["cookies"]),
                headers=tuple(call["headers"]),
                status=call["status"],
            )
            for call in document["calls"]
        ]
        return [c for c in calls if c.n > since and (token is None or c.token == token)]

    async def get_session_fault(
        self,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """``POST /dev/get-session-fault``: the next ``times`` get-session requests (-1: all
        until cleared) wait ``delay`` seconds, then answer ``status`` with ``Retry-After``
        (without a status they go on to Better Auth)."""
        body: dict[str, Any] = {"delayMs": round(delay * 1000), "times": times}
        if status is not None:
            body["status"] = status
        if retry_after is not None:
            body["retryAfter"] = retry_after
        await self._dev("/dev/get-session-fault", body)

    async def clear_get_session_fault(self) -> None:
        """Back to normal get-session answers."""
        assert (await self._dev("/dev/get-session-fault", {})) == {"fault": None}


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

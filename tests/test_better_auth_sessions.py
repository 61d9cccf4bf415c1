"""Against a real Better Auth server: browser session cookies and opaque session tokens.

The server (``examples/better-auth-server``, better-auth 1.7.25 on Node) keeps a session cookie
cache signed with its JWKS keys (``cookieCache: {enabled: true, strategy: "jwt"}`` with
``jwt({sessionCookieCache: true})``) and has the bearer and admin plugins. Every credential
here is one it handed out: the ``session_token`` and ``session_data`` cookies a browser holds,
the session token of ``/sign-in/email`` (raw and signed), and JWTs. The server records each
get-session call it handles, so the tests count what the middleware asked it.

Every response of every app here is checked: never a 500, and never a session token or a
``session_data`` signature in its body; no log line carries one either.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _better_auth import (
    SESSION_COOKIE,
    Account,
    BetterAuthAPI,
    BetterAuthServer,
    bearer,
    require_server,
    running_server,
    server_fixture,
    unverified_part,
)
from _serving import lifespan, start_uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from starlette_betterauth import BetterAuthMiddleware, requires_role
from starlette_betterauth.credentials import BearerJWT, SessionCookie, SessionToken

pytestmark = pytest.mark.integration

#: The answer cache's TTL in the revocation tests: the bound a sign-out, a ban or a role
#: change takes to reach an API that saw the session before.
CACHE_TTL = 0.5
#: Long enough that no cached answer expires while a test runs.
LONG_TTL = 600.0
FOREIGN = "https://evil.example"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

sessions_server = server_fixture("sessions_server", DEV_ENDPOINTS="1")
#: session_data cookies that live 2 s, to see one expire.
short_cache_server = server_fixture(
    "short_cache_server", DEV_ENDPOINTS="1", COOKIE_CACHE_MAX_AGE="2"
)


@pytest.fixture
def lone_server() -> Iterator[BetterAuthServer]:
    """A server of this test's own, which the test may stop."""
    require_server()
    with running_server(DEV_ENDPOINTS="1") as server:
        yield server


# -- no secret in a response or a log line -------------------------------------------------------


class Leaks:
    """The secrets of every account the watched APIs handed out, looked for where none belongs."""

    def __init__(self) -> None:
        self.apis: list[BetterAuthAPI] = []

    def watch(self, api: BetterAuthAPI) -> BetterAuthAPI:
        self.apis.append(api)
        return api

    def assert_absent(self, text: str, where: str) -> None:
        for api in self.apis:
            for account in api.accounts:
                for secret in account.secrets():
                    assert secret not in text, f"a session secret of {account.email} in {where}"

    async def check(self, response: httpx.Response) -> None:
        """Every response of the app: no 500, no secret in the body."""
        await response.aread()
        assert response.status_code != 500, response.text
        self.assert_absent(response.text, f"the body of {response.request.url.path}")


@pytest.fixture
def leaks(caplog: pytest.LogCaptureFixture) -> Iterator[Leaks]:
    """Checks, after the test, that no log line carried a secret of its accounts."""
    caplog.set_level(logging.DEBUG, logger="starlette_betterauth")
    found = Leaks()
    yield found
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(formatter.format(record) for record in caplog.get_records("call"))
    found.assert_absent(text, "a log line")


# -- the app -------------------------------------------------------------------------------------


def describe(user: Any) -> dict[str, Any]:
    """What the tests compare: who, with which roles, through which kind of credential."""
    return {
        "id": user.id,
        "email": user.email,
        "roles": sorted(user.roles),
        "kind": user.kind,
        "session_id": user.session_id,
        "expires_at": user.expires_at,
    }


async def me(request: Request) -> JSONResponse:
    """The caller as the middleware saw it; any method."""
    return JSONResponse({"method": request.method, **describe(request.state.user)})


async def claims(request: Request) -> Response:
    """The whole claims mapping, as an app that echoes it would."""
    body = json.dumps(dict(request.state.user.claims), default=str)
    return Response(body, media_type="application/json")


@requires_role("admin")
async def admin(request: Request) -> JSONResponse:
    """Admins only."""
    return JSONResponse({"admin": request.state.user.id})


@requires_role("editor")
async def editor(request: Request) -> JSONResponse:
    """Editors only."""
    return JSONResponse({"editor": request.state.user.id})


async def ws(websocket: WebSocket) -> None:
    """Greets the caller over a websocket."""
    await websocket.accept()
    await websocket.send_json(describe(websocket.state.user))
    await websocket.close()


def session_app(
    server_url: str, http: httpx.AsyncClient | None, *, accept: Sequence[Any], **options: Any
) -> Starlette:
    """A Starlette app behind BetterAuthMiddleware accepting the credential kinds ``accept``."""
    routes = [
        Route("/me", me, methods=["GET", *UNSAFE_METHODS]),
        Route("/claims", claims),
        Route("/admin", admin),
        Route("/editor", editor),
        WebSocketRoute("/ws", ws),
    ]
    settings: dict[str, Any] = {"base_url": server_url, "accept": list(accept), **options}
    if http is not None:
        settings["http_client"] = http
    return Starlette(routes=routes, middleware=[Middleware(BetterAuthMiddleware, **settings)])


def create_app() -> Starlette:
    """For ``uvicorn --factory``: every kind, for the server at ``BETTER_AUTH_URL``."""
    accept = [SessionCookie(), SessionToken(), BearerJWT()]
    return session_app(os.environ["BETTER_AUTH_URL"], None, accept=accept)


def every_kind(ttl: float = LONG_TTL) -> list[Any]:
    """All three kinds, remote answers cached for ``ttl`` seconds."""
    return [SessionCookie(cache_ttl=ttl), SessionToken(cache_ttl=ttl), BearerJWT()]


@asynccontextmanager
async def app_client(app: Starlette, leaks: Leaks) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    hooks = {"response": [leaks.check]}
    async with (
        lifespan(app),  # the middleware closes its get-session clients at shutdown
        httpx.AsyncClient(
            transport=transport, base_url="http://testserver", event_hooks=hooks
        ) as client,
    ):
        yield client


# -- assertions ----------------------------------------------------------------------------------


def assert_user(response: httpx.Response, account: Account, kind: str) -> dict[str, Any]:
    """200, the account's user, authenticated by ``kind``; session id and expiry for sessions."""
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["id"] == account.user_id
    assert me["email"] == account.email
    assert me["kind"] == kind
    if kind == "jwt":
        assert me["session_id"] is None
    else:
        assert me["session_id"] == account.session_id
        assert me["expires_at"] == pytest.approx(account.session_expires_at, abs=1.0)
    document: dict[str, Any] = me
    return document


def assert_refused(response: httpx.Response, status: int = 401) -> None:
    """Refused with an RFC 6750 challenge; 401s say ``invalid_token``."""
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    if status == 401:
        assert 'error="invalid_token"' in challenge
    assert response.headers["cache-control"] == "no-store"


def assert_unavailable(response: httpx.Response) -> None:
    """503 with a ``Retry-After`` of whole seconds."""
    assert_refused(response, 503)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1


def session_data_with(account: Account, **claims: Any) -> dict[str, str]:
    """``account``'s cookies with the ``session_data`` payload changed, its signature kept."""
    header, _, signature = account.session_data_jwt.split(".")
    changed = {**unverified_part(account.session_data_jwt, 1), **claims}
    encoded = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    return {
        SESSION_COOKIE: account.cookie,
        "better-auth.session_data": f"{header}.{encoded}.{signature}",
    }


def cookie_header(cookies: dict[str, str], **extra: str) -> dict[str, str]:
    return {"cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()), **extra}


async def wait_past(timestamp: float) -> None:
    """Sleep until the wall clock has passed ``timestamp`` (bounded by how far away it is)."""
    while time.time() <= timestamp:
        await anyio.sleep(min(0.1, max(timestamp - time.time(), 0.0) + 0.01))


# -- cookies -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_browser_cookies_get_the_user_without_any_get_session_call(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up(name="Ada")
        assert [name for name, _ in account.session_data] == ["better-auth.session_data"]
        mark = await api.get_session_mark()
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for _ in range(5):
                response = await client.get("/me", headers=account.cookie_header())
                me = assert_user(response, account, "session_cookie")
                assert me["roles"] == ["user"]
            # Other cookies of the site ride along and change nothing.
            headers = account.cookie_header(extra={"theme": "dark", "csrftoken": "x"})
            assert_user(await client.get("/me", headers=headers), account, "session_cookie")
        assert await api.get_session_calls(since=mark, token=account.token) == []


@pytest.mark.anyio
async def test_chunked_session_data_cookie_is_joined(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up(name="N" * 5000)
        names = [name for name, _ in account.session_data]
        assert names == ["better-auth.session_data.0", "better-auth.session_data.1"]
        mark = await api.get_session_mark()
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            assert_user(
                await client.get("/me", headers=account.cookie_header()), account, "session_cookie"
            )
            # A missing chunk or chunks out of order are a broken cookie, not an absent one.
            (first, second) = account.session_data
            for broken in ({first[0]: first[1]}, {first[0]: second[1], second[0]: first[1]}):
                cookies = {SESSION_COOKIE: account.cookie, **broken}
                assert_refused(await client.get("/me", headers=cookie_header(cookies)))
        assert await api.get_session_calls(since=mark, token=account.token) == []


@pytest.mark.anyio
async def test_session_token_cookie_alone_goes_through_get_session_once(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        mark = await api.get_session_mark()
        headers = {
            **account.cookie_header(session_data=False, extra={"theme": "dark"}),
            "x-request-id": "abc",
        }
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for _ in range(5):
                response = await client.get("/me", headers=headers)
                assert_user(response, account, "session_cookie")
        (call,) = await api.get_session_calls(since=mark, token=account.token)
        # The session_token cookie, signed as the browser sent it, and nothing else of the
        # request: no other cookie, no header of the app's client.
        assert (call.via, call.signed, call.status) == ("cookie", True, 200)
        assert call.cookies == (SESSION_COOKIE,)
        assert not {"authorization", "x-request-id", "origin", "referer"} & set(call.headers)


# -- session tokens ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sign_in_token_as_bearer_raw_and_signed(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        email = (await api.sign_up()).email
        account = await api.sign_in(email)
        assert len(account.token) == 32
        assert "." not in account.token
        assert account.signed_token.startswith(account.token + ".")
        jwt = await api.jwt(account)
        mark = await api.get_session_mark()
        for accept in ([SessionToken(), BearerJWT()], [BearerJWT(), SessionToken()]):
            app = session_app(server.url, http, accept=accept)
            async with app_client(app, leaks) as client:
                for token in (account.token, account.signed_token):
                    response = await client.get("/me", headers=bearer(token))
                    assert_user(response, account, "session_token")
                # Whatever the order, a three-segment bearer value is a JWT.
                assert_user(await client.get("/me", headers=bearer(jwt)), account, "jwt")
        calls = await api.get_session_calls(since=mark, token=account.token)
        assert calls
        # Bearer calls carry the token and no cookie at all (none of a client's cookie jar:
        # a session_data cookie would make Better Auth answer from it, not from its database).
        assert {(call.via, call.status, call.cookies) for call in calls} == {("bearer", 200, ())}


@pytest.mark.anyio
async def test_unknown_or_forged_session_tokens_are_refused(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        signature = account.signed_token.split(".", 1)[1]
        forged = [
            "A" * 32,  # the shape of a token, unknown to the server
            f"{account.token}.{'B' * len(signature)}",  # a real token, a wrong signature
            f"{'C' * 32}.{signature}",  # a real signature on another token
        ]
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for token in forged:
                assert_refused(await client.get("/me", headers=bearer(token)))
            # The account itself is unharmed.
            assert_user(
                await client.get("/me", headers=bearer(account.token)), account, "session_token"
            )


@pytest.mark.anyio
async def test_session_token_where_only_jwts_are_accepted_names_the_fix(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        mark = await api.get_session_mark()
        app = session_app(server.url, http, accept=[SessionCookie(), BearerJWT()])
        async with app_client(app, leaks) as client:
            for token in (account.token, account.signed_token):
                response = await client.get("/me", headers=bearer(token))
                assert_refused(response)
                reason = response.json()["error_description"]
                assert "session token" in reason.lower()
                assert "SessionToken" in reason
                assert "/api/auth/token" in reason
        assert await api.get_session_calls(since=mark, token=account.token) == []


@pytest.mark.anyio
async def test_one_new_session_many_concurrent_requests_one_get_session_call(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        email = (await api.sign_up()).email
        by_token, by_cookie = await api.sign_in(email), await api.sign_in(email)
        mark = await api.get_session_mark()
        seen: list[tuple[int, str | None, str | None]] = []
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:

            async def call(headers: dict[str, str]) -> None:
                response = await client.get("/me", headers=headers)
                me = response.json()
                seen.append((response.status_code, me.get("kind"), me.get("session_id")))

            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(call, bearer(by_token.token))
                    group.start_soon(call, by_cookie.cookie_header(session_data=False))

        expected = {
            (200, "session_token", by_token.session_id): 100,
            (200, "session_cookie", by_cookie.session_id): 100,
        }
        assert {key: seen.count(key) for key in set(seen)} == expected
        assert len(await api.get_session_calls(since=mark, token=by_token.token)) == 1
        assert len(await api.get_session_calls(since=mark, token=by_cookie.token)) == 1


# -- revocation ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_signed_out_session_is_refused_once_the_cache_ttl_has_passed(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        app = session_app(server.url, http, accept=every_kind(CACHE_TTL))
        async with app_client(app, leaks) as client:
            ways = {
                "raw": bearer(account.token),
                "signed": bearer(account.signed_token),
                "cookie": account.cookie_header(session_data=False),
            }
            for headers in ways.values():
                assert (await client.get("/me", headers=headers)).status_code == 200

            await api.sign_out(account)
            assert await api.get_session(bearer(account.token)) is None
            await anyio.sleep(CACHE_TTL + 0.1)
            mark = await api.get_session_mark()
            for headers in ways.values():
                assert_refused(await client.get("/me", headers=headers))
            calls = await api.get_session_calls(since=mark, token=account.token)
            assert calls
            assert {call.status for call in calls} == {200}  # answered null
            assert {call.cookies for call in calls} <= {(), (SESSION_COOKIE,)}

            # A copied cookie pair: session_data is verified locally and still fresh, so it
            # outlives the sign-out until it expires (cookieCache.maxAge, Better Auth itself
            # does the same), at no get-session call.
            mark = await api.get_session_mark()
            response = await client.get("/me", headers=account.cookie_header())
            assert_user(response, account, "session_cookie")
            assert await api.get_session_calls(since=mark, token=account.token) == []


@pytest.mark.anyio
async def test_expired_session_data_falls_back_to_get_session(
    short_cache_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = short_cache_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        staying = await api.sign_up()
        leaving = await api.sign_up()
        for account in (staying, leaving):
            assert account.session_data_claims["exp"] - account.session_data_claims["iat"] == 2
        exp = max(account.session_data_claims["exp"] for account in (staying, leaving))
        # leeway=0: a session_data cookie counts as expired at its exp exactly.
        app = session_app(server.url, http, accept=every_kind(CACHE_TTL), leeway=0)
        async with app_client(app, leaks) as client:
            await api.sign_out(leaving)
            await wait_past(exp)
            mark = await api.get_session_mark()
            response = await client.get("/me", headers=staying.cookie_header())
            assert_user(response, staying, "session_cookie")
            assert_refused(await client.get("/me", headers=leaving.cookie_header()))
        # One call each, with the session_token cookie alone; the server answered the session
        # for one and null for the other.
        for account in (staying, leaving):
            (call,) = await api.get_session_calls(since=mark, token=account.token)
            assert (call.via, call.status, call.cookies) == ("cookie", 200, (SESSION_COOKIE,))


@pytest.mark.anyio
async def test_banned_user_is_forbidden_as_with_a_jwt(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        before_ban = account
        app = session_app(server.url, http, accept=every_kind(CACHE_TTL))
        async with app_client(app, leaks) as client:
            for headers in (bearer(account.token), account.cookie_header(session_data=False)):
                assert (await client.get("/me", headers=headers)).status_code == 200

            # Banned in the user row, the session left alive: every kind reads `banned`.
            await api.update_user(account.user_id, banned=True, ban_reason="spam")
            banned_jwt = await api.jwt(account)
            assert unverified_part(banned_jwt, 1)["banned"] is True
            banned_cookie = await api.refresh_session_data(account)
            assert banned_cookie.session_data_claims["user"]["banned"] is True
            await anyio.sleep(CACHE_TTL + 0.1)

            answers = []
            for headers in (
                bearer(banned_jwt),
                bearer(account.token),
                account.cookie_header(session_data=False),
            ):
                response = await client.get("/me", headers=headers)
                assert_refused(response, 403)
                answers.append((response.headers["www-authenticate"], response.json()))
            # The session_data cookie that says banned is refused locally, at no call.
            mark = await api.get_session_mark()
            response = await client.get("/me", headers=banned_cookie.cookie_header())
            assert_refused(response, 403)
            answers.append((response.headers["www-authenticate"], response.json()))
            assert await api.get_session_calls(since=mark, token=account.token) == []
            assert answers[1:] == answers[:1] * 3

            # A session_data cookie issued before the ban says banned: false until it expires.
            response = await client.get("/me", headers=before_ban.cookie_header())
            assert_user(response, account, "session_cookie")

            await api.update_user(account.user_id, banned=False)
            await anyio.sleep(CACHE_TTL + 0.1)
            assert_user(
                await client.get("/me", headers=bearer(account.token)), account, "session_token"
            )


@pytest.mark.anyio
async def test_admin_plugin_ban_ends_every_session(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        admin = await api.admin()
        account = await api.sign_up()
        app = session_app(server.url, http, accept=every_kind(CACHE_TTL))
        async with app_client(app, leaks) as client:
            ways = (bearer(account.token), account.cookie_header(session_data=False))
            for headers in ways:
                assert (await client.get("/me", headers=headers)).status_code == 200

            # The admin plugin deletes a banned user's sessions: they are gone, not banned.
            await api.ban(admin, account.user_id)
            await anyio.sleep(CACHE_TTL + 0.1)
            for headers in ways:
                assert_refused(await client.get("/me", headers=headers))
            assert await api.sign_in_status(account.email) == (403, "BANNED_USER")

            await api.unban(admin, account.user_id)
            again = await api.sign_in(account.email)
            assert_user(
                await client.get("/me", headers=bearer(again.token)), again, "session_token"
            )


@pytest.mark.anyio
async def test_role_guards_answer_as_for_jwts(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        admin = await api.admin()
        user = await api.sign_up()
        app = session_app(server.url, http, accept=every_kind(CACHE_TTL))

        def ways(account: Account, jwt: str) -> list[dict[str, str]]:
            return [
                bearer(jwt),
                bearer(account.token),
                account.cookie_header(session_data=False),
                account.cookie_header(),
            ]

        async with app_client(app, leaks) as client:
            for headers in ways(admin, await api.jwt(admin)):
                response = await client.get("/admin", headers=headers)
                assert response.status_code == 200, response.text
                assert response.json() == {"admin": admin.user_id}

            answers = []
            for headers in ways(user, await api.jwt(user)):
                response = await client.get("/admin", headers=headers)
                assert_refused(response, 403)
                assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
                answers.append((response.headers["www-authenticate"], response.json()))
            assert answers[1:] == answers[:1] * 3

            assert await api.set_role(admin, user.user_id, ["user", "editor"]) == "user,editor"
            await anyio.sleep(CACHE_TTL + 0.1)
            fresh = await api.refresh_session_data(user)
            for headers in ways(fresh, await api.jwt(user)):
                assert (await client.get("/editor", headers=headers)).status_code == 200
                assert_refused(await client.get("/admin", headers=headers), 403)
            # The session_data cookie issued before the change keeps the old role.
            assert_refused(await client.get("/editor", headers=user.cookie_header()), 403)


# -- cross-site requests -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cookie_requests_must_come_from_a_trusted_origin(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        jwt = await api.jwt(account)
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for cookies in (account.cookie_header(), account.cookie_header(session_data=False)):
                # Same site: the base URL's origin, by Origin or (without one) by Referer.
                for extra in ({"origin": server.url}, {"referer": f"{server.url}/app/page"}):
                    response = await client.post("/me", headers={**cookies, **extra})
                    assert_user(response, account, "session_cookie")
                # Cross-site, or no way to tell: refused for every unsafe method.
                for extra in (
                    {"origin": FOREIGN},
                    {"origin": "null"},
                    {"origin": server.url.replace("127.0.0.1", "localhost")},
                    {"referer": f"{FOREIGN}/page"},
                    {},
                ):
                    for method in UNSAFE_METHODS:
                        response = await client.request(method, "/me", headers={**cookies, **extra})
                        assert_refused(response, 403)
                # Safe methods are not state-changing: any origin reads.
                response = await client.get("/me", headers={**cookies, "origin": FOREIGN})
                assert_user(response, account, "session_cookie")

            # Bearer credentials are not ambient: any origin.
            for method in UNSAFE_METHODS:
                for token, kind in ((account.token, "session_token"), (jwt, "jwt")):
                    headers = {**bearer(token), "origin": FOREIGN}
                    response = await client.request(method, "/me", headers=headers)
                    assert response.json()["method"] == method
                    assert_user(response, account, kind)

        trusted = "https://app.example"
        accept = [SessionCookie(trusted_origins=[trusted]), SessionToken(), BearerJWT()]
        async with app_client(session_app(server.url, http, accept=accept), leaks) as client:
            headers = {**account.cookie_header(), "origin": trusted}
            assert_user(await client.post("/me", headers=headers), account, "session_cookie")
            headers = {**account.cookie_header(), "origin": FOREIGN}
            assert_refused(await client.post("/me", headers=headers), 403)


async def sign_up_with_jwt(server: BetterAuthServer) -> tuple[Account, str]:
    async with BetterAuthAPI(server) as api:
        account = await api.sign_up()
        return account, await api.jwt(account)


def test_cookie_websocket_needs_a_trusted_origin(sessions_server: BetterAuthServer) -> None:
    server = sessions_server
    account, jwt = anyio.run(sign_up_with_jwt, server)
    cookies = account.cookie_header()
    env = {"BETTER_AUTH_URL": server.url}
    target = "test_better_auth_sessions:create_app"
    with start_uvicorn(target, env=env, factory=True) as uvicorn:
        url = uvicorn.url.replace("http://", "ws://") + "/ws"

        def greeting(headers: dict[str, str], origin: str | None) -> dict[str, Any]:
            site = None if origin is None else Origin(origin)
            with connect(url, additional_headers=headers, origin=site, open_timeout=15) as ws:
                document: dict[str, Any] = json.loads(ws.recv(timeout=15))
                return document

        assert greeting(cookies, server.url)["kind"] == "session_cookie"
        for origin in (FOREIGN, None):
            with pytest.raises(InvalidStatus) as refused:
                greeting(cookies, origin)
            assert refused.value.response.status_code == 403
            body = refused.value.response.body or b""
            assert account.token.encode() not in body
        # Bearer credentials: any origin.
        assert greeting(bearer(account.token), FOREIGN)["kind"] == "session_token"
        assert greeting(bearer(jwt), FOREIGN)["kind"] == "jwt"


# -- forged cookies ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tampered_session_data_is_refused(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        claims = account.session_data_claims
        header, payload, signature = account.session_data_jwt.split(".")
        middle = len(signature) // 2
        flipped = "A" if signature[middle] != "A" else "B"
        tampered = [
            session_data_with(account, user={**claims["user"], "role": "admin"}),
            session_data_with(account, exp=claims["exp"] + 3600),
            session_data_with(account, aud=server.url),
            session_data_with(account, iss="https://evil.example"),
            {
                SESSION_COOKIE: account.cookie,
                "better-auth.session_data": ".".join(
                    [header, payload, signature[:middle] + flipped + signature[middle + 1 :]]
                ),
            },
        ]
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for cookies in tampered:
                assert_refused(await client.get("/me", headers=cookie_header(cookies)))
            # Kinds are tried in order: the first credential present decides, refused or not.
            for accept, status in (
                ([SessionCookie(), BearerJWT()], 401),
                ([BearerJWT(), SessionCookie()], 200),
            ):
                app = session_app(server.url, http, accept=accept)
                async with app_client(app, leaks) as ordered:
                    headers = {**cookie_header(tampered[0]), **bearer(await api.jwt(account))}
                    response = await ordered.get("/me", headers=headers)
                    if status == 200:
                        assert_user(response, account, "jwt")
                    else:
                        assert_refused(response, status)


@pytest.mark.anyio
async def test_session_data_of_another_session_is_refused(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        mine = await api.sign_up()
        my_other_session = await api.sign_in(mine.email)
        someone_else = await api.sign_up()
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for other in (my_other_session, someone_else):
                assert other.session_data_claims["sid"] != mine.token
                cookies = {SESSION_COOKIE: mine.cookie, **dict(other.session_data)}
                assert_refused(await client.get("/me", headers=cookie_header(cookies)))
            # Each pair of its own is fine.
            for account in (mine, my_other_session, someone_else):
                response = await client.get("/me", headers=account.cookie_header())
                assert_user(response, account, "session_cookie")


# -- Better Auth unavailable ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_better_auth_down_uncached_sessions_503_cached_keys_still_verify(
    lone_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = lone_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        seen = await api.sign_up()
        unseen = await api.sign_up()
        seen_jwt, unseen_jwt = await api.jwt(seen), await api.jwt(unseen)
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            assert_user(await client.get("/me", headers=bearer(seen_jwt)), seen, "jwt")
            assert_user(await client.get("/me", headers=bearer(seen.token)), seen, "session_token")

            server.stop()
            assert not server.running
            assert_unavailable(await client.get("/me", headers=bearer(unseen.token)))
            assert_unavailable(
                await client.get("/me", headers=unseen.cookie_header(session_data=False))
            )
            # The keys are cached: JWTs and session_data cookies still verify locally, and a
            # session answered before is still cached.
            assert_user(await client.get("/me", headers=bearer(unseen_jwt)), unseen, "jwt")
            response = await client.get("/me", headers=unseen.cookie_header())
            assert_user(response, unseen, "session_cookie")
            assert_user(await client.get("/me", headers=bearer(seen.token)), seen, "session_token")


@pytest.mark.anyio
async def test_get_session_errors_answer_503_and_retry_after_is_honoured(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        try:
            for status in (429, 500, 502, 503):
                account = await api.sign_up()
                await api.get_session_fault(status=status, retry_after="60", times=-1)
                mark = await api.get_session_mark()
                # A fresh app each time: no backoff left over from the previous status.
                app = session_app(server.url, http, accept=every_kind())
                async with app_client(app, leaks) as client:
                    for headers in (
                        bearer(account.token),
                        account.cookie_header(session_data=False),
                        bearer(account.token),
                    ):
                        response = await client.get("/me", headers=headers)
                        assert_unavailable(response)
                        assert int(response.headers["retry-after"]) <= 60
                # Told to come back in 60 s, the app asked once: one server, one wait, whichever
                # kind of credential comes next.
                calls = await api.get_session_calls(since=mark, token=account.token)
                assert [(call.via, call.status) for call in calls] == [("bearer", status)]
                await api.clear_get_session_fault()

            # Told to come back in 1 s, it asks again once that second has passed: the
            # server's trouble was not a verdict on the session.
            account = await api.sign_up()
            await api.get_session_fault(status=503, retry_after="1", times=-1)
            app = session_app(server.url, http, accept=every_kind())
            async with app_client(app, leaks) as client:
                assert_unavailable(await client.get("/me", headers=bearer(account.token)))
                await api.clear_get_session_fault()
                response = await client.get("/me", headers=bearer(account.token))
                for _ in range(100):  # bounded: 10 s, ten times the Retry-After
                    if response.status_code == 200:
                        break
                    assert_unavailable(response)
                    await anyio.sleep(0.1)
                    response = await client.get("/me", headers=bearer(account.token))
                assert_user(response, account, "session_token")
        finally:
            await api.clear_get_session_fault()


# -- what the user object carries ----------------------------------------------------------------


@pytest.mark.anyio
async def test_claims_of_every_kind_carry_no_session_secret(
    sessions_server: BetterAuthServer, leaks: Leaks
) -> None:
    server = sessions_server
    async with leaks.watch(BetterAuthAPI(server)) as api, httpx.AsyncClient() as http:
        account = await api.sign_up()
        async with app_client(session_app(server.url, http, accept=every_kind()), leaks) as client:
            for headers in (
                account.cookie_header(),
                account.cookie_header(session_data=False),
                bearer(account.token),
                bearer(account.signed_token),
                bearer(await api.jwt(account)),
            ):
                # The response hook looks for the tokens in each body.
                response = await client.get("/claims", headers=headers)
                assert response.status_code == 200, response.text
                assert account.user_id in response.text

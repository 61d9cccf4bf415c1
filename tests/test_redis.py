"""RedisStore against a real redis-server: Better Auth's secondaryStorage, the shared
get-session cache, JWT revocation, and what each does while Redis fails.

Redis is reached with redis-py's asyncio client, so the tests that reach it run on
asyncio; the trio test shows what the kinds do where Redis cannot be reached.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from _redis import BetterAuthStorage, RedisServer, free_port, running_redis
from redis import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, RedisStore
from starlette_betterauth._fleet import StoredSessions
from starlette_betterauth._redis import RedisLink
from starlette_betterauth.credentials import (
    AccessToken,
    BearerJWT,
    Credential,
    Introspection,
    SessionCookie,
    SessionToken,
)
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer, JWKSServer

pytestmark = pytest.mark.anyio
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """Keys of one test: Better Auth's storage prefix (each test has its own)."""
    return f"ba-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Redis]:
    """A synchronous client for the test's own reads and writes, closed after the test."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def storage(redis_client: Redis, prefix: str) -> BetterAuthStorage:
    return BetterAuthStorage(redis_client, prefix)


def store_for(url: str, prefix: str, **options: Any) -> RedisStore:
    options.setdefault("cache_prefix", "sba-" + prefix)
    return RedisStore(url, key_prefix=prefix, **options)


async def me(request: Request) -> JSONResponse:
    user = request.state.user
    return JSONResponse({"id": user.id, "kind": user.kind, "session_id": user.session_id})


def make_app(server: JWKSServer, accept: Sequence[Credential]) -> BetterAuthMiddleware:
    app = Starlette(routes=[Route("/me", me)])
    return BetterAuthMiddleware(app, base_url=server.url, accept=accept)


@asynccontextmanager
async def client_for(app: BetterAuthMiddleware, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", **kwargs
        ) as client:
            yield client
    finally:
        await app.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def stored(app: BetterAuthMiddleware, index: int = 0) -> StoredSessions:
    sessions = app.kinds[index].sessions  # type: ignore[attr-defined]
    assert isinstance(sessions, StoredSessions)
    return sessions


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://127.0.0.1:6379"}, "redis://"),
        ({"url": "redis://x", "timeout": 0}, "timeout"),
        ({"url": "redis://x", "retry_interval": -1}, "retry_interval"),
        ({"url": "redis://x", "on_error": "ignore"}, "on_error"),
        ({"url": "redis://x", "max_connections": 0}, "max_connections"),
        ({"url": "redis://x", "key_prefix": None}, "key_prefix"),
        ({"url": "redis://x", "cache_prefix": ""}, "cache_prefix"),
        ({"url": "redis://x", "secondary_storage": "yes"}, "secondary_storage"),
    ],
)
def test_store_settings_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisStore(**options)


def test_store_repr_hides_the_password() -> None:
    store = RedisStore("redis://:hunter2@cache.internal:6379/0")
    assert "hunter2" not in repr(store)
    assert "cache.internal" in repr(store)


def test_revocations_need_secondary_storage(server: JWKSServer) -> None:
    store = RedisStore("redis://127.0.0.1:1", secondary_storage=False)
    with pytest.raises(ConfigurationError, match="secondary_storage=True"):
        make_app(server, [BearerJWT(redis=store)])
    with pytest.raises(ConfigurationError, match="revocation_ttl"):
        make_app(server, [BearerJWT(redis=RedisStore("redis://x"), revocation_ttl=-1)])


# -- sessions from Better Auth's secondaryStorage ----------------------------------------------


@asyncio_only
async def test_session_token_is_read_from_secondary_storage(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    session = issuer.session(email="ada@example.com")
    storage.put(session)
    app = make_app(server, [SessionToken(redis=store_for(redis_server.url, prefix))])
    async with client_for(app) as client:
        for token in (session.token, session.signed_token) * 5:
            response = await client.get("/me", headers=bearer(token))
            assert response.status_code == 200, response.text
        assert response.json() == {
            "id": session.user_id,
            "kind": "session_token",
            "session_id": session.id,
        }
        assert stored(app).status().reads == 10
        storage.sign_out(session)
        response = await client.get("/me", headers=bearer(session.token))
        assert response.status_code == 401
        assert "secondaryStorage" in response.headers["www-authenticate"]
    assert server.session_requests == 0


@asyncio_only
async def test_key_prefix_is_where_sessions_are_read(
    redis_server: RedisServer, server: JWKSServer, issuer: Issuer, storage: BetterAuthStorage
) -> None:
    session = issuer.session()
    storage.put(session)
    app = make_app(server, [SessionToken(redis=store_for(redis_server.url, "elsewhere:"))])
    async with client_for(app) as client:
        response = await client.get("/me", headers=bearer(session.token))
    assert response.status_code == 401  # Better Auth's keys are under another prefix
    assert server.session_requests == 0


@asyncio_only
async def test_revocation_mark_ban_and_expiry_are_seen_at_once(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    marked, banned, later = (issuer.session() for _ in range(3))
    expired = issuer.session(expires_in=-5)
    for session in (marked, later, expired):
        storage.put(session)
    storage.put(banned, banned=True)
    # A mark written after the first session was created and before the last.
    storage.mark(marked.user_id, at=time.time() + 0.001)
    time.sleep(0.01)
    later_after_mark = issuer.session(marked.user_id)
    storage.put(later_after_mark)
    app = make_app(server, [SessionToken(redis=store_for(redis_server.url, prefix))])
    async with client_for(app) as client:
        answers = {
            name: await client.get("/me", headers=bearer(session.token))
            for name, session in [
                ("marked", marked),
                ("banned", banned),
                ("expired", expired),
                ("later", later),
                ("after_mark", later_after_mark),
            ]
        }
    assert answers["marked"].status_code == 401
    assert "revoked" in answers["marked"].headers["www-authenticate"]
    assert answers["banned"].status_code == 403
    assert answers["expired"].status_code == 401
    assert answers["later"].status_code == 200
    assert answers["after_mark"].status_code == 200
    assert server.session_requests == 0


@asyncio_only
async def test_session_cookie_is_read_from_secondary_storage_not_its_cookie_cache(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    session = issuer.session()
    storage.put(session)
    store = store_for(redis_server.url, prefix)
    app = make_app(server, [SessionCookie(redis=store)])
    # The JWKS-signed cookie cache stays valid for minutes after a sign-out: not used.
    async with client_for(app, cookies=issuer.session_cookies(session)) as client:
        assert (await client.get("/me")).status_code == 200
        storage.sign_out(session)
        response = await client.get("/me")
    assert response.status_code == 401
    assert server.session_requests == 0


@asyncio_only
async def test_a_value_that_is_no_session_for_the_token_is_a_refusal(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    # The key read is the client's token: it may name any of Better Auth's keys.
    session, other = issuer.session(), issuer.session()
    storage.put(session)
    storage.put(other)
    storage.client.set(prefix + "garbage-token", b"{not json")
    storage.client.set(prefix + "copied-token", json.dumps(other.answer()))
    tokens = [
        "garbage-token",
        "copied-token",  # a session stored under another token
        f"active-sessions-{session.user_id}",
        f"revoked-sessions-before-{session.user_id}",
    ]
    storage.mark(session.user_id, at=0.001)
    app = make_app(server, [SessionToken(redis=store_for(redis_server.url, prefix))])
    async with client_for(app) as client:
        codes = [(await client.get("/me", headers=bearer(t))).status_code for t in tokens]
    assert codes == [401, 401, 401, 401]
    assert server.session_requests == 0
    assert stored(app).link.retry_in() == 0  # no failure of Redis either


@asyncio_only
async def test_an_unusable_revocation_mark_falls_back_to_get_session_or_refuses(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = issuer.session()
    storage.put(session)
    storage.client.set(f"{prefix}revoked-sessions-before-{session.user_id}", b"yesterday")
    fallback = make_app(server, [SessionToken(redis=store_for(redis_server.url, prefix))])
    refuse = make_app(
        server, [SessionToken(redis=store_for(redis_server.url, prefix, on_error="refuse"))]
    )
    with caplog.at_level(logging.WARNING, logger="starlette_betterauth"):
        async with client_for(fallback) as client:
            assert (await client.get("/me", headers=bearer(session.token))).status_code == 200
        async with client_for(refuse) as client:
            response = await client.get("/me", headers=bearer(session.token))
    assert server.session_requests == 1
    assert response.status_code == 503
    assert "unusable" in caplog.text
    assert session.token not in caplog.text
    # An unusable value is one key's problem: Redis is not marked down for it.
    assert stored(refuse).link.retry_in() == 0


# -- faults --------------------------------------------------------------------------------


@asyncio_only
async def test_redis_down_falls_back_to_get_session(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    session = issuer.session()
    store = RedisStore(f"redis://127.0.0.1:{free_port()}", timeout=0.2, retry_interval=30)
    app = make_app(server, [SessionToken(redis=store)])
    with caplog.at_level(logging.WARNING, logger="starlette_betterauth"):
        async with client_for(app) as client:
            for _ in range(20):
                assert (await client.get("/me", headers=bearer(session.token))).status_code == 200
    status = stored(app).status()
    assert (status.reads, status.fallbacks, status.get_session_calls) == (0, 20, 1)
    # One warning for the outage, not one per request.
    assert caplog.text.count("Redis failed") == 1


@asyncio_only
async def test_redis_down_with_refuse_answers_503_with_retry_after(
    server: JWKSServer, issuer: Issuer
) -> None:
    session = issuer.session()
    store = RedisStore(
        f"redis://127.0.0.1:{free_port()}", timeout=0.2, retry_interval=7, on_error="refuse"
    )
    app = make_app(server, [SessionToken(redis=store), BearerJWT(redis=store)])
    async with client_for(app) as client:
        first = await client.get("/me", headers=bearer(session.token))
        second = await client.get("/me", headers=bearer(session.token))
        jwt = await client.get("/me", headers=bearer(issuer.token()))
    for response in (first, second, jwt):
        assert response.status_code == 503, response.text
        assert 1 <= int(response.headers["retry-after"]) <= 7
    assert server.session_requests == 0


class _Garbage:
    """A TCP server on 127.0.0.1 that answers anything with bytes that are not RESP."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                try:
                    connection.recv(65536)
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff garbage\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.socket.close()
        self.thread.join(timeout=5)


@asyncio_only
async def test_garbage_answers_are_a_failure_not_a_500(server: JWKSServer, issuer: Issuer) -> None:
    garbage = _Garbage()
    try:
        session = issuer.session()
        store = RedisStore(f"redis://127.0.0.1:{garbage.port}", timeout=0.5)
        app = make_app(server, [SessionToken(redis=store), BearerJWT(redis=store)])
        async with client_for(app) as client:
            token = await client.get("/me", headers=bearer(session.token))
            jwt = await client.get("/me", headers=bearer(issuer.token()))
    finally:
        garbage.close()
    assert token.status_code == 200  # get-session answered instead
    assert jwt.status_code == 200  # accepted on its signature
    assert server.session_requests == 1


@asyncio_only
async def test_slow_redis_is_bounded_and_recovers(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    session = issuer.session()
    storage.put(session)
    store = store_for(redis_server.url, prefix, timeout=0.3, retry_interval=0.5)
    app = make_app(server, [SessionToken(redis=store, cache_ttl=0)])
    async with client_for(app) as client:
        assert (await client.get("/me", headers=bearer(session.token))).status_code == 200
        redis_server.pause()
        try:
            with anyio.fail_after(5):  # bounded by the store's timeout, not hung
                paused = await client.get("/me", headers=bearer(session.token))
        finally:
            redis_server.resume()
        await anyio.sleep(0.6)  # retry_interval
        recovered = await client.get("/me", headers=bearer(session.token))
    assert paused.status_code == 200  # from get-session
    assert recovered.status_code == 200
    status = stored(app).status()
    assert (status.reads, status.fallbacks, status.get_session_calls) == (2, 1, 1)


@asyncio_only
async def test_a_session_seen_revoked_is_never_accepted_again(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    # Redis (Better Auth's sessions) says signed out; get-session, asked while Redis
    # fails, still says live (a stale replica, a cache): the process keeps the refusal.
    session = issuer.session()
    storage.put(session)
    store = store_for(redis_server.url, prefix, timeout=0.3, retry_interval=60)
    app = make_app(server, [SessionToken(redis=store)])
    async with client_for(app) as client:
        assert (await client.get("/me", headers=bearer(session.token))).status_code == 200
        storage.sign_out(session)
        assert (await client.get("/me", headers=bearer(session.token))).status_code == 401
        redis_server.pause()
        try:
            responses = [await client.get("/me", headers=bearer(session.token)) for _ in range(3)]
            other = issuer.session()
            fallback = await client.get("/me", headers=bearer(other.token))
        finally:
            redis_server.resume()
    assert [r.status_code for r in responses] == [401, 401, 401]
    assert fallback.status_code == 200
    assert stored(app).status().remembered == 3
    assert server.session_requests == 1  # only for the other session


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_redis_is_never_asked(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = issuer.session()
    storage.put(session)
    app = make_app(server, [SessionToken(redis=store_for(redis_server.url, prefix))])
    with caplog.at_level(logging.ERROR, logger="starlette_betterauth"):
        async with client_for(app) as client:
            for _ in range(3):
                assert (await client.get("/me", headers=bearer(session.token))).status_code == 200
    assert caplog.text.count("needs asyncio") == 1
    assert server.session_requests == 1


@asyncio_only
async def test_connections_are_pooled_per_process_and_closed_at_shutdown(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    def connections() -> int:
        return len(storage.client.client_list()) - 1  # less the test's own

    sessions = [issuer.session() for _ in range(50)]
    for session in sessions:
        storage.put(session)
    # A long timeout: on a loaded machine 400 requests may wait longer than 0.5 s for one
    # of the 4 connections, and each would then rightly do without Redis.
    store = store_for(redis_server.url, prefix, max_connections=4, timeout=30.0)
    # Two middlewares and three kinds with equal settings: one pool of at most 4.
    apps = [
        make_app(server, [SessionToken(redis=store), BearerJWT(redis=store)]),
        make_app(server, [SessionCookie(redis=store)]),
    ]
    before = connections()
    codes: list[int] = []
    async with client_for(apps[0]) as one, client_for(apps[1]) as two:

        async def call(index: int) -> None:
            session = sessions[index % len(sessions)]
            response = await one.get("/me", headers=bearer(session.token))
            codes.append(response.status_code)
            cookies = issuer.session_cookies(session, session_data=False)
            response = await two.get("/me", headers={"cookie": _cookie_header(cookies)})
            codes.append(response.status_code)

        async with anyio.create_task_group() as group:
            for index in range(200):
                group.start_soon(call, index)
        during = connections()
    assert codes == [200] * 400
    assert 1 <= during - before <= 4
    assert connections() == before
    assert server.session_requests == 0


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


@asyncio_only
async def test_a_link_closed_twice_releases_once(redis_server: RedisServer, prefix: str) -> None:
    store = store_for(redis_server.url, prefix)
    first, second = RedisLink(store), RedisLink(store)
    assert await first.lock("lock:a", "first", 5.0)
    await first.aclose()
    await first.aclose()
    assert not await second.lock("lock:a", "second", 5.0)  # the pool is still there
    await second.aclose()


# -- JWT revocation ------------------------------------------------------------------------


@asyncio_only
async def test_jwts_issued_before_the_users_revocation_are_refused(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    user = "user-" + uuid.uuid4().hex[:8]
    old = issuer.token(user_id=user, issued_at=time.time() - 60)
    storage.revoke_user(user, at=time.time() - 30)
    new = issuer.token(user_id=user)
    unrevoked = issuer.token(issued_at=time.time() - 60)
    app = make_app(server, [BearerJWT(redis=store_for(redis_server.url, prefix))])
    async with client_for(app) as client:
        codes = [
            (await client.get("/me", headers=bearer(token))).status_code
            for token in (old, new, unrevoked, old, new)
        ]
        no_iat = await client.get("/me", headers=bearer(issuer.token(user_id=user, iat=None)))
    assert codes == [401, 200, 200, 401, 200]
    assert no_iat.status_code == 401


@asyncio_only
async def test_jwt_with_sid_is_refused_once_its_session_is_gone(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    session, other = issuer.session(), issuer.session()
    storage.put(session)
    storage.put(other)
    token = issuer.token(user_id=session.user_id, sid=session.id)
    unknown = issuer.token(user_id=session.user_id, sid="no-such-session")
    store = store_for(redis_server.url, prefix)
    now = make_app(server, [BearerJWT(redis=store, revocation_ttl=0)])
    later = make_app(server, [BearerJWT(redis=store, revocation_ttl=60)])
    async with client_for(now) as checks_each, client_for(later) as remembers:
        before = [
            (await c.get("/me", headers=bearer(token))).status_code
            for c in (checks_each, remembers)
        ]
        assert (await checks_each.get("/me", headers=bearer(unknown))).status_code == 401
        storage.sign_out(session)
        after = [
            (await c.get("/me", headers=bearer(token))).status_code
            for c in (checks_each, remembers)
        ]
        body = (await remembers.get("/me", headers=bearer(token))).json()
    assert before == [200, 200]
    # revocation_ttl bounds how late a sign-out is seen: 0 at once, 60 s later here.
    assert after == [401, 200]
    assert body["session_id"] == session.id


@asyncio_only
async def test_known_revocations_hold_while_redis_fails(
    redis_server: RedisServer,
    server: JWKSServer,
    issuer: Issuer,
    storage: BetterAuthStorage,
    prefix: str,
) -> None:
    session = issuer.session()
    storage.put(session)
    revoked_sid = issuer.token(user_id=session.user_id, sid=session.id)
    marked_user = "user-" + uuid.uuid4().hex[:8]
    marked = issuer.token(user_id=marked_user, issued_at=time.time() - 60)
    storage.revoke_user(marked_user, at=time.time() - 30)
    fresh = issuer.token()
    store = store_for(redis_server.url, prefix, timeout=0.3, retry_interval=60)
    app = make_app(server, [BearerJWT(redis=store, revocation_ttl=0)])
    async with client_for(app) as client:
        assert (await client.get("/me", headers=bearer(revoked_sid))).status_code == 200
        storage.sign_out(session)
        assert (await client.get("/me", headers=bearer(revoked_sid))).status_code == 401
        assert (await client.get("/me", headers=bearer(marked))).status_code == 401
        redis_server.pause()
        try:
            codes = [
                (await client.get("/me", headers=bearer(token))).status_code
                for token in (revoked_sid, marked, fresh)
            ]
        finally:
            redis_server.resume()
    # What this process knows stays refused; the rest is accepted on its signature.
    assert codes == [401, 401, 200]


# -- answers shared by the fleet: get-session and introspection ----------------------------

API = "https://api.example.com"


def shared_store(redis_server: RedisServer, prefix: str, **options: Any) -> RedisStore:
    # A long timeout: on a loaded machine a round trip may take longer than the default
    # 0.5 s, and the request would then rightly call the server without Redis.
    options.setdefault("timeout", 10.0)
    return store_for(redis_server.url, prefix, secondary_storage=False, **options)


@dataclass
class SharedLookup:
    """One lookup whose answers the fleet shares: how to accept it, mint and revoke its
    credentials, count its calls and name its Redis entries."""

    service: str
    kind: Callable[..., Credential]
    new: Callable[[], str]
    revoke: Callable[[str], None]
    calls: Callable[[], int]
    key: Callable[[str], bytes]
    expiring: Callable[[float], str]
    fail: Callable[[int], None]


@pytest.fixture(params=["get-session", "introspection"])
def lookup(request: pytest.FixtureRequest, server: JWKSServer, issuer: Issuer) -> SharedLookup:
    from starlette_betterauth._introspection import IntrospectedToken
    from starlette_betterauth._sessions import SessionCredential

    if request.param == "get-session":
        sessions: dict[str, Any] = {}

        def new_session(expires_in: float = 604800) -> str:
            session = issuer.session(expires_in=expires_in)
            sessions[session.token] = session
            return session.token

        return SharedLookup(
            "get-session",
            lambda store, **options: SessionToken(redis=store, **options),
            new_session,
            lambda token: issuer.revoke_session(sessions[token]),
            lambda: server.session_requests,
            lambda token: SessionCredential.bearer(token).key,
            new_session,
            lambda status: setattr(server, "session_status", status),
        )
    client_id, secret = issuer.register_client()

    def introspecting(store: RedisStore, **options: Any) -> Credential:
        settings = Introspection(client_id=client_id, client_secret=secret, redis=store, **options)
        return AccessToken(resource=API, introspection=settings)

    def new_token(expires_in: float = 3600) -> str:
        return issuer.opaque_access_token(scope="read", user_id="u1", expires_in=expires_in)

    return SharedLookup(
        "introspection",
        introspecting,
        new_token,
        issuer.revoke_access_token,
        lambda: server.introspection_requests,
        lambda token: IntrospectedToken(token).key,
        new_token,
        lambda status: setattr(server, "introspection_status", status),
    )


def entry(lookup: SharedLookup, store: RedisStore, token: str, what: str = "answer") -> str:
    """The Redis key of ``token``'s shared entry (or its lock)."""
    return f"{store.cache_prefix}{what}:{lookup.service}:{lookup.key(token).hex()}"


@asyncio_only
async def test_shared_cache_makes_one_call_across_processes(
    redis_server: RedisServer, server: JWKSServer, lookup: SharedLookup, prefix: str
) -> None:
    live, revoked = lookup.new(), lookup.new()
    lookup.revoke(revoked)
    store = shared_store(redis_server, prefix)
    # Each middleware stands for a process: its own client and caches. Long timers: on a
    # loaded machine 800 requests may outlast the default lock (timeout + 1 s) or refusal
    # (5 s) lifetimes, and each would rightly allow another call.
    kind = lookup.kind(store, timeout=30.0, refusal_ttl=60.0)
    apps = [make_app(server, [kind]) for _ in range(4)]
    codes: list[int] = []
    refusals: set[str] = set()
    async with (
        client_for(apps[0]) as a,
        client_for(apps[1]) as b,
        client_for(apps[2]) as c,
        client_for(apps[3]) as d,
    ):
        clients = [a, b, c, d]

        async def call(index: int, token: str) -> None:
            response = await clients[index % 4].get("/me", headers=bearer(token))
            codes.append(response.status_code)
            if response.status_code == 401:
                refusals.add(response.headers["www-authenticate"])

        for token in (live, revoked):
            async with anyio.create_task_group() as group:
                for index in range(200):
                    group.start_soon(call, index, token)
    assert codes.count(200) == 200
    assert codes.count(401) == 200
    assert lookup.calls() == 2  # one per credential, across the four
    # The stored refusal is the server's, read again: the same answer in every process.
    assert len(refusals) == 1


@asyncio_only
async def test_shared_entries_end_with_the_credential_and_hold_no_token(
    redis_server: RedisServer,
    redis_client: Redis,
    server: JWKSServer,
    lookup: SharedLookup,
    prefix: str,
) -> None:
    store = shared_store(redis_server, prefix)
    soon, later, revoked = lookup.expiring(10), lookup.new(), lookup.new()
    lookup.revoke(revoked)
    app = make_app(server, [lookup.kind(store, cache_ttl=20, refusal_ttl=4)])
    async with client_for(app) as client:
        codes = [
            (await client.get("/me", headers=bearer(token))).status_code
            for token in (soon, later, revoked)
        ]
    lifetimes = [redis_client.pttl(entry(lookup, store, token)) / 1000 for token in (soon, later)]
    refusal = redis_client.pttl(entry(lookup, store, revoked)) / 1000
    values = [redis_client.get(entry(lookup, store, t)) for t in (soon, later, revoked)]
    locks = redis_client.keys(f"{store.cache_prefix}lock:*")
    assert codes == [200, 200, 401]
    # Bounded by the credential's own expiry (10 s) and cache_ttl (20 s; 1 h or 7 days left).
    assert 0 < lifetimes[0] <= 10
    assert 0 < lifetimes[1] <= 20
    assert 0 < refusal <= 4  # refusal_ttl
    for token, value in zip((soon, later, revoked), values, strict=True):
        assert isinstance(value, bytes)
        assert token.encode() not in value
    assert locks == []  # released once the answer was stored


@asyncio_only
async def test_get_session_and_introspection_entries_never_collide(
    redis_server: RedisServer, redis_client: Redis, server: JWKSServer, issuer: Issuer, prefix: str
) -> None:
    client_id, secret = issuer.register_client()
    store = shared_store(redis_server, prefix)
    session = issuer.session()
    token = issuer.opaque_access_token(scope="read", user_id="u1", prefix="at_")
    settings = Introspection(client_id=client_id, client_secret=secret, redis=store)
    accept = [
        SessionToken(redis=store),
        AccessToken(resource=API, introspection=settings, opaque_prefix="at_"),
    ]
    async with client_for(make_app(server, accept)) as client:
        kinds = [
            (await client.get("/me", headers=bearer(t))).json()["kind"]
            for t in (session.token, token)
        ]
    keys = [os.fsdecode(key) for key in redis_client.keys(f"{store.cache_prefix}*")]
    names = sorted(key.removeprefix(store.cache_prefix).rpartition(":")[0] for key in keys)
    assert kinds == ["session_token", "access_token"]
    assert names == ["answer:get-session", "answer:introspection"]


@asyncio_only
async def test_a_crashed_lock_holder_blocks_one_lock_period_at_most(
    redis_server: RedisServer,
    redis_client: Redis,
    server: JWKSServer,
    lookup: SharedLookup,
    prefix: str,
) -> None:
    token = lookup.new()
    store = shared_store(redis_server, prefix)
    # A worker took the lock and died: its lock stays until it expires.
    redis_client.set(entry(lookup, store, token, "lock"), "dead-worker", px=60_000)
    app = make_app(server, [lookup.kind(store, timeout=0.2)])
    async with client_for(app) as http:
        with anyio.fail_after(10):  # the lock period is timeout + 1 s
            response = await http.get("/me", headers=bearer(token))
    assert response.status_code == 200
    assert lookup.calls() == 1


@asyncio_only
@pytest.mark.parametrize(
    "garbage",
    [
        b'{"v":1,"session":"garbage"}',  # an entry of an older version
        b"sba2 not-a-time\n{}",
        b"sba2 nan\n{}",
        b'sba2 1e12\n{"session":1}',  # an answer the server would not give
        b"sba2 1e12\n\xff\xfe",
    ],
)
async def test_garbage_in_the_shared_cache_is_a_miss(
    redis_server: RedisServer,
    redis_client: Redis,
    server: JWKSServer,
    lookup: SharedLookup,
    prefix: str,
    garbage: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = lookup.new()
    store = shared_store(redis_server, prefix)
    redis_client.set(entry(lookup, store, token), garbage, px=60_000)
    with caplog.at_level(logging.WARNING, logger="starlette_betterauth"):
        async with client_for(make_app(server, [lookup.kind(store)])) as http:
            response = await http.get("/me", headers=bearer(token))
    stored_again = redis_client.get(entry(lookup, store, token))
    assert response.status_code == 200
    assert lookup.calls() == 1
    assert "unusable shared" in caplog.text
    assert token not in caplog.text
    assert isinstance(stored_again, bytes)
    assert stored_again.startswith(b"sba2 ")


@asyncio_only
async def test_a_failed_call_is_not_shared_and_releases_the_lock(
    redis_server: RedisServer,
    redis_client: Redis,
    server: JWKSServer,
    lookup: SharedLookup,
    prefix: str,
) -> None:
    token = lookup.new()
    store = shared_store(redis_server, prefix)
    first = make_app(server, [lookup.kind(store)])
    second = make_app(server, [lookup.kind(store)])
    async with client_for(first) as one, client_for(second) as two:
        lookup.fail(503)
        failed = await one.get("/me", headers=bearer(token))
        kept = [
            redis_client.exists(entry(lookup, store, token, what)) for what in ("answer", "lock")
        ]
        lookup.fail(200)
        # Another process calls at once: no answer to wait for, no lock held.
        with anyio.fail_after(5):
            answered = await two.get("/me", headers=bearer(token))
    assert failed.status_code == 503
    assert failed.headers["retry-after"]
    assert kept == [0, 0]
    assert answered.status_code == 200
    assert lookup.calls() == 2


@asyncio_only
async def test_shared_cache_down_or_slow_falls_back_or_refuses(
    redis_server: RedisServer, server: JWKSServer, lookup: SharedLookup, prefix: str
) -> None:
    down = RedisStore(f"redis://127.0.0.1:{free_port()}", secondary_storage=False, timeout=0.2)
    refuse = RedisStore(
        f"redis://127.0.0.1:{free_port()}",
        secondary_storage=False,
        timeout=0.2,
        on_error="refuse",
        retry_interval=3,
    )
    codes = []
    for each in (down, refuse):
        async with client_for(make_app(server, [lookup.kind(each)])) as http:
            response = await http.get("/me", headers=bearer(lookup.new()))
            codes.append(response.status_code)
    # Redis down: a direct call, or a 503 with "refuse".
    assert codes == [200, 503]
    assert response.headers["retry-after"] == "3"
    assert lookup.calls() == 1
    # Redis that stops answering: each request bounded by the store's timeout, then a call.
    slow = shared_store(redis_server, prefix, timeout=0.3, retry_interval=0.5)
    async with client_for(make_app(server, [lookup.kind(slow, cache_ttl=0)])) as http:
        redis_server.pause()
        try:
            with anyio.fail_after(5):
                paused = await http.get("/me", headers=bearer(lookup.new()))
        finally:
            redis_server.resume()
        await anyio.sleep(0.6)  # retry_interval
        recovered = await http.get("/me", headers=bearer(lookup.new()))
    assert (paused.status_code, recovered.status_code) == (200, 200)
    assert lookup.calls() == 3


@asyncio_only
async def test_an_answer_taken_from_the_shared_cache_ends_with_its_entry(
    redis_server: RedisServer, server: JWKSServer, lookup: SharedLookup, prefix: str
) -> None:
    token = lookup.new()
    store = shared_store(redis_server, prefix)
    first = make_app(server, [lookup.kind(store, cache_ttl=2)])
    second = make_app(server, [lookup.kind(store, cache_ttl=2)])
    async with client_for(first) as one, client_for(second) as two:
        assert (await one.get("/me", headers=bearer(token))).status_code == 200
        await anyio.sleep(1.2)
        # The second process takes the answer from Redis with 0.8 s of it left.
        assert (await two.get("/me", headers=bearer(token))).status_code == 200
        lookup.revoke(token)
        await anyio.sleep(1.4)
        after = [(await c.get("/me", headers=bearer(token))).status_code for c in (one, two)]
    # Both kept the answer no longer than the entry in Redis: cache_ttl bounds a revocation.
    assert after == [401, 401]
    assert lookup.calls() == 2


@asyncio_only
async def test_introspection_shares_the_pool_and_closes_it_at_shutdown(
    redis_server: RedisServer, redis_client: Redis, server: JWKSServer, issuer: Issuer, prefix: str
) -> None:
    client_id, secret = issuer.register_client()
    store = shared_store(redis_server, prefix, max_connections=2, timeout=30.0)
    settings = Introspection(client_id=client_id, client_secret=secret, redis=store)
    before = len(redis_client.client_list())
    tokens = [issuer.opaque_access_token(scope="read", user_id="u1") for _ in range(20)]
    apps = [make_app(server, [AccessToken(resource=API, introspection=settings)]) for _ in range(2)]
    codes: list[int] = []
    async with client_for(apps[0]) as one, client_for(apps[1]) as two:

        async def call(index: int) -> None:
            client = (one, two)[index % 2]
            response = await client.get("/me", headers=bearer(tokens[index % 20]))
            codes.append(response.status_code)

        async with anyio.create_task_group() as group:
            for index in range(100):
                group.start_soon(call, index)
        during = len(redis_client.client_list())
    after = len(redis_client.client_list())
    assert codes == [200] * 100
    assert server.introspection_requests == 20
    assert 1 <= during - before <= 2  # one pool of 2 for both middlewares
    assert after == before

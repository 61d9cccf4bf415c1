"""A fleet: 8 uvicorn workers in 2 server processes ("hosts"), one Redis, one Better Auth.

Counts get-session calls for 1,000 requests carrying one new session, and introspection
calls for 1,000 requests carrying one new opaque access token, measures how long each
worker takes to refuse a session after a sign-out or a ban, and stops Redis in the
middle of a run. The numbers are printed (``pytest tests/test_fleet.py -s``); what is
asserted holds on any machine: the call counts, no acceptance after a sign-out with
secondaryStorage, no 500, Retry-After on every 503, recovery, connections released.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anyio
import pytest
from _better_auth import BetterAuthAPI, BetterAuthServer, bearer, require_server, running_server
from _fleet import (
    Answer,
    CountingProxy,
    Host,
    Load,
    first_refusal,
    refused_everywhere,
    uvicorn_host,
)
from _redis import RedisServer, running_redis

from starlette_betterauth._introspection import IntrospectedToken
from starlette_betterauth.testing import Issuer, JWKSServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
HOSTS, WORKERS, REQUESTS = 2, 4, 1000
PREFIX = "fleet:"


def report(capsys: pytest.CaptureFixture[str], title: str, **numbers: Any) -> None:
    with capsys.disabled():
        print(f"\n[fleet] {title}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


def connected_clients(redis_server: RedisServer) -> int:
    client = redis_server.client()
    try:
        return len(client.client_list()) - 1  # less this one
    finally:
        client.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def auth_server(redis_server: RedisServer) -> Iterator[BetterAuthServer]:
    require_server()
    with running_server(REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=PREFIX) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(auth_server: BetterAuthServer) -> Iterator[CountingProxy]:
    counting = CountingProxy(auth_server.url)
    yield counting
    counting.close()


@pytest.fixture(scope="module")
def secondary_fleet(
    redis_server: RedisServer, auth_server: BetterAuthServer, proxy: CountingProxy
) -> Iterator[list[Host]]:
    env = {
        "FLEET_MODE": "secondary",
        "FLEET_BASE_URL": auth_server.url,
        "FLEET_GET_SESSION_URL": proxy.url + "/api/auth/get-session",
        "FLEET_REDIS_URL": redis_server.url,
        "FLEET_KEY_PREFIX": PREFIX,
    }
    with ExitStack() as stack:
        yield [stack.enter_context(uvicorn_host(env, workers=WORKERS)) for _ in range(HOSTS)]


def statuses(answers: list[Answer]) -> dict[int, int]:
    return dict(sorted(Counter(a.status for a in answers).items()))


@asyncio_only
async def test_secondary_storage_one_new_session_costs_no_get_session_call(
    secondary_fleet: list[Host],
    auth_server: BetterAuthServer,
    proxy: CountingProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load = Load(secondary_fleet)
    assert len(load.workers) == HOSTS * WORKERS
    async with BetterAuthAPI(auth_server) as auth:
        account = await auth.sign_up()
    calls = proxy.session_calls
    started = time.monotonic()
    answers = await load.burst(account.session_token, REQUESTS)
    elapsed = time.monotonic() - started
    assert statuses(answers) == {200: REQUESTS}
    assert proxy.session_calls - calls == 0
    report(
        capsys,
        "secondaryStorage, 1 new session",
        requests=REQUESTS,
        get_session_calls=proxy.session_calls - calls,
        workers_answering=len({a.worker for a in answers}),
        seconds=f"{elapsed:.2f}",
    )


@asyncio_only
async def test_secondary_storage_sign_out_and_ban_reach_every_worker(
    secondary_fleet: list[Host],
    auth_server: BetterAuthServer,
    proxy: CountingProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load = Load(secondary_fleet)
    workers = load.workers
    async with BetterAuthAPI(auth_server) as auth:
        admin = await auth.admin()
        leaving, banned = await auth.sign_up(), await auth.sign_up()
        banned_jwt = await auth.jwt(banned)
        calls = proxy.session_calls
        # Every worker has accepted them before.
        for token in (leaving.session_token, banned.session_token):
            await load.until(token, refused_everywhere(workers, 200))

        response = await auth.http.post(
            auth_server.api_url("/sign-out"), headers=bearer(leaving.session_token)
        )
        assert response.status_code == 200
        signed_out = time.monotonic()
        after_sign_out = await load.until(leaving.session_token, refused_everywhere(workers))

        # Every worker has just checked the JWT: its verdict is remembered (revocation_ttl 1 s).
        await load.until(banned_jwt, refused_everywhere(workers, 200))
        response = await auth.http.post(
            auth_server.api_url("/admin/ban-user"),
            headers=bearer(admin.session_token),
            json={"userId": banned.user_id},
        )
        assert response.status_code == 200
        ban = time.monotonic()
        after_ban = await load.until(banned.session_token, refused_everywhere(workers))
        jwt_after_ban = await load.until(banned_jwt, refused_everywhere(workers))

    # secondaryStorage: nothing accepted once sign-out or ban has answered.
    assert [a for a in after_sign_out if a.status != 401] == []
    assert [a for a in after_ban if a.status != 401] == []
    assert set(first_refusal(after_sign_out, signed_out)) == workers
    assert set(first_refusal(jwt_after_ban, ban)) == workers
    assert proxy.session_calls == calls
    late_jwt = [a.received - ban for a in jwt_after_ban if a.status == 200]
    report(
        capsys,
        "sign-out and ban",
        sign_out_answers_after=len(after_sign_out),
        sign_out_accepted_after=0,
        ban_session_answers_after=len(after_ban),
        ban_session_accepted_after=0,
        ban_jwt_accepted_after=len(late_jwt),
        ban_jwt_last_accepted_s=f"{max(late_jwt, default=0):.3f}",
        ban_jwt_every_worker_refused_s=f"{max(first_refusal(jwt_after_ban, ban).values()):.3f}",
    )


@asyncio_only
async def test_redis_stopped_mid_run_gives_503_then_recovers(
    secondary_fleet: list[Host],
    auth_server: BetterAuthServer,
    redis_server: RedisServer,
    proxy: CountingProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load = Load(secondary_fleet, concurrency=16)
    workers = load.workers
    async with BetterAuthAPI(auth_server) as auth:
        account = await auth.sign_up()
        jwt = await auth.jwt(account)
    assert statuses(await load.burst(account.session_token, 64)) == {200: 64}
    calls = proxy.session_calls
    redis_server.stop()
    stopped = time.monotonic()
    try:
        outage: list[Answer] = []
        while time.monotonic() - stopped < 2.0:
            outage += await load.burst(account.session_token, 32)
            outage += await load.burst(jwt, 32)
    finally:
        redis_server.start()
    restarted = time.monotonic()
    outage_calls = proxy.session_calls - calls
    recovered = await load.until(
        account.session_token,
        lambda answers: workers <= {a.worker for a in answers[-64:] if a.status == 200},
        pause=0.1,
    )
    clients = connected_clients(redis_server)

    by_token = statuses([a for a in outage if a.status in (200, 503)])
    assert all(a.status in (200, 503) for a in outage), statuses(outage)
    assert all(a.retry_after for a in outage if a.status == 503)
    assert workers <= {a.worker for a in recovered[-64:] if a.status == 200}
    # At most each worker's pool (max_connections=32), and in practice far fewer.
    assert clients <= HOSTS * WORKERS * 32 + 1
    report(
        capsys,
        "Redis stopped for 2 s",
        outage_statuses=by_token,
        session_token_503=sum(1 for a in outage if a.status == 503),
        jwt_200=sum(1 for a in outage if a.status == 200),
        get_session_calls_during_outage=outage_calls,
        recovered_every_worker_s=f"{recovered[-1].received - restarted:.2f}",
        redis_connections_after=clients,
    )


# -- the shared get-session cache, with the testing kit's server counting calls ------------


@asyncio_only
async def test_shared_cache_one_new_session_costs_one_get_session_call(
    redis_server: RedisServer,
    issuer: Issuer,
    server: JWKSServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache_ttl = 10.0
    env = {
        "FLEET_MODE": "shared",
        "FLEET_BASE_URL": server.url,
        "FLEET_GET_SESSION_URL": server.session_url,
        "FLEET_REDIS_URL": redis_server.url,
        "FLEET_CACHE_TTL": str(cache_ttl),
    }
    before = connected_clients(redis_server)
    session = issuer.session()
    with ExitStack() as stack:
        hosts = [stack.enter_context(uvicorn_host(env, workers=WORKERS)) for _ in range(HOSTS)]
        load = Load(hosts)
        started = time.monotonic()
        answers = await load.burst(session.token, REQUESTS)
        elapsed = time.monotonic() - started
        assert statuses(answers) == {200: REQUESTS}
        calls = server.session_requests
        # One call across the fleet per cache_ttl (a slow machine may take longer than one).
        assert calls <= 1 + int(elapsed // cache_ttl)
        issuer.revoke_session(session)
        revoked = time.monotonic()
        after = await load.until(session.token, refused_everywhere(load.workers), pause=0.05)
        during = connected_clients(redis_server)
    # The workers closed their pools at shutdown.
    deadline = time.monotonic() + 10
    while connected_clients(redis_server) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connected_clients(redis_server) == before
    refusals = first_refusal(after, revoked)
    assert set(refusals) == load.workers
    report(
        capsys,
        "shared cache, 1 new session",
        requests=REQUESTS,
        get_session_calls=calls,
        seconds=f"{elapsed:.2f}",
        sign_out_every_worker_refused_s=f"{max(refusals.values()):.2f}",
        bound_s=cache_ttl,
        get_session_calls_total=server.session_requests,
        redis_connections=during - before,
    )


# -- introspection answers shared by the fleet --------------------------------------------

API = "https://api.example.com"


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[JWKSServer]:
    """The testing kit's server: introspection of its issuer's opaque tokens, counted."""
    with JWKSServer(Issuer()) as server:
        yield server


@pytest.fixture(scope="module")
def introspection_fleet(
    redis_server: RedisServer, oauth_server: JWKSServer
) -> Iterator[list[Host]]:
    client_id, secret = oauth_server.issuer.register_client()
    env = {
        "FLEET_MODE": "introspection",
        "FLEET_BASE_URL": oauth_server.url,
        "FLEET_REDIS_URL": redis_server.url,
        "FLEET_CLIENT_ID": client_id,
        "FLEET_CLIENT_SECRET": secret,
        "FLEET_RESOURCE": API,
        # Long lock (timeout + 1 s) and refusal lifetimes: on a loaded machine a burst
        # must not outlast them, which would rightly allow a second call.
        "FLEET_TIMEOUT": "30",
        "FLEET_REFUSAL_TTL": "60",
    }
    with ExitStack() as stack:
        yield [stack.enter_context(uvicorn_host(env, workers=WORKERS)) for _ in range(HOSTS)]


def opaque_token(server: JWKSServer, user_id: str = "u1") -> str:
    return server.issuer.opaque_access_token(scope="read", user_id=user_id)


@asyncio_only
async def test_shared_introspection_one_new_token_costs_one_call(
    introspection_fleet: list[Host], oauth_server: JWKSServer, capsys: pytest.CaptureFixture[str]
) -> None:
    load = Load(introspection_fleet)
    assert len(load.workers) == HOSTS * WORKERS
    token, revoked = opaque_token(oauth_server), opaque_token(oauth_server, "u2")
    oauth_server.issuer.revoke_access_token(revoked)
    calls = oauth_server.introspection_requests
    started = time.monotonic()
    accepted = await load.burst(token, REQUESTS)
    elapsed = time.monotonic() - started
    accepted_calls = oauth_server.introspection_requests - calls
    refused = await load.burst(revoked, REQUESTS)
    refused_calls = oauth_server.introspection_requests - calls - accepted_calls
    assert statuses(accepted) == {200: REQUESTS}
    assert statuses(refused) == {401: REQUESTS}
    # One call across the fleet per cache_ttl (60 s; a slow machine may take longer).
    assert accepted_calls <= 1 + int(elapsed // 60)
    assert refused_calls == 1  # active: false, shared for refusal_ttl (60 s here)
    report(
        capsys,
        "shared introspection, 1 new token",
        requests=REQUESTS,
        introspection_calls=accepted_calls,
        seconds=f"{elapsed:.2f}",
        workers_answering=len({a.worker for a in accepted}),
        inactive_token_requests=REQUESTS,
        inactive_token_calls=refused_calls,
    )


@asyncio_only
async def test_shared_introspection_with_redis_stopped_calls_once_per_worker(
    introspection_fleet: list[Host],
    oauth_server: JWKSServer,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load = Load(introspection_fleet, concurrency=16)
    workers = load.workers
    known = opaque_token(oauth_server)
    # Every worker holds it before the outage: the calls counted then are for the new token.
    warm = await load.until(known, refused_everywhere(workers, 200))
    assert workers <= {a.worker for a in warm if a.status == 200}
    assert statuses(warm) == {200: len(warm)}
    calls = oauth_server.introspection_requests
    redis_server.stop()
    stopped = time.monotonic()
    new = opaque_token(oauth_server)  # first seen while Redis is down
    try:
        outage: list[Answer] = []
        while time.monotonic() - stopped < 2.0:
            outage += await load.burst(new, 32)
            outage += await load.burst(known, 32)
    finally:
        redis_server.start()
    restarted = time.monotonic()
    outage_calls = oauth_server.introspection_requests - calls
    # Recovered once a new token costs one call again: every worker shares through Redis.
    recovery_calls: list[int] = []
    deadline = restarted + 30.0
    while time.monotonic() < deadline:
        probe = opaque_token(oauth_server)
        before = oauth_server.introspection_requests
        answers = await load.burst(probe, 64)
        assert statuses(answers) == {200: 64}
        recovery_calls.append(oauth_server.introspection_requests - before)
        if recovery_calls[-1] == 1:
            break
        await anyio.sleep(0.2)
    recovered = time.monotonic() - restarted
    clients = connected_clients(redis_server)
    redis = redis_server.client()
    try:
        shared = redis.exists(f"starlette-betterauth:answer:introspection:{_hex(probe)}")
    finally:
        redis.close()

    # on_error="fallback": each worker asks introspection itself, once per new token.
    assert statuses(outage) == {200: len(outage)}
    assert outage_calls <= len(workers)
    assert recovery_calls[-1] == 1
    assert shared == 1
    assert clients <= HOSTS * WORKERS * 32 + 1
    report(
        capsys,
        "shared introspection, Redis stopped for 2 s",
        outage_statuses=statuses(outage),
        introspection_calls_during_outage=outage_calls,
        workers=len(workers),
        new_token_calls_after_restart=recovery_calls,
        one_call_again_after_s=f"{recovered:.2f}",
        redis_connections=clients,
    )


def _hex(token: str) -> str:
    return IntrospectedToken(token).key.hex()

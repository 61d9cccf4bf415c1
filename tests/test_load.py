"""Load and memory: cold bursts, a hundred thousand distinct tokens, two uvicorn workers.

Counts and bounds, never durations: one key-set fetch for a cold burst, a bounded
number for a flood of unknown kids, bounded memory growth, no leaked tasks or
connections. The large runs drive the ASGI app in-process; the two-worker run
is a real ``uvicorn --workers 2`` process group against a real key server.
"""

from __future__ import annotations

import gc
import os
import secrets
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import psutil
import pytest
from _helpers import asgi_client, bearer
from _serving import start_uvicorn
from starlette.types import Message, Receive, Scope, Send

from starlette_betterauth import BetterAuthMiddleware, KeySetOptions
from starlette_betterauth.testing import Issuer, JWKSServer, b64url

REQUESTS = 100_000
WORKERS = 100  # concurrent tasks driving the app
RSS_BOUND = 50 * 1024 * 1024
PLATEAU_BOUND = 10 * 1024 * 1024
COOLDOWN = 0.5


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def call(app: BetterAuthMiddleware, authorization: bytes) -> tuple[int, bytes]:
    """One HTTP request straight into the ASGI app: (status, body)."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"app"), (b"authorization", authorization)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    status = 0
    body = b""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


class TokenMix:
    """Distinct tokens, made one at a time so none are held: what a hostile crowd sends.

    Out of every 1,000: 450 junk (random text, random segments, stray bytes),
    299 valid-looking tokens on the published kid with a random signature, 250
    genuinely signed ones (each new, so the verified-token cache fills and then
    evicts) and 1 with a random, unknown kid.
    """

    def __init__(self, issuer: Issuer) -> None:
        self.key = issuer.current_key
        self.header = b64url({"alg": self.key.alg, "kid": self.key.kid})
        self.claims = issuer.claims()

    def _new_user(self) -> dict[str, Any]:
        self.claims["sub"] = self.claims["id"] = secrets.token_urlsafe(24)
        return self.claims

    def kind(self, index: int) -> str:
        slot = index % 1000
        if slot < 450:
            return "junk"
        if slot < 749:
            return "random-signature"
        if slot < 999:
            return "genuine"
        return "unknown-kid"

    def authorization(self, index: int) -> bytes:
        kind = self.kind(index)
        if kind == "junk":
            shape = index % 4
            if shape == 0:
                return b"Bearer " + secrets.token_urlsafe(48).encode()
            if shape == 1:
                parts = (secrets.token_urlsafe(n) for n in (24, 120, 64))
                return b"Bearer " + ".".join(parts).encode()
            if shape == 2:
                return b"Bearer " + os.urandom(64).replace(b" ", b"x")
            return b"Bearer " + f"{self.header}.{secrets.token_urlsafe(90)}.AA".encode()
        if kind == "random-signature":
            token = f"{self.header}.{b64url(self._new_user())}.{b64url(os.urandom(64))}"
        elif kind == "genuine":
            token = self.key.sign(self._new_user())
        else:
            header = b64url({"alg": "EdDSA", "kid": secrets.token_urlsafe(24)})
            token = f"{header}.{b64url(self._new_user())}.{b64url(os.urandom(64))}"
        return b"Bearer " + token.encode()

    def expected(self, index: int) -> int:
        return 200 if self.kind(index) == "genuine" else 401


def _connections() -> int:
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="inet")
        if connection.status != psutil.CONN_LISTEN
    )


async def _settled_connections(baseline: int) -> int:
    """Open connections once the key server's threads have closed theirs (bounded wait)."""
    count = _connections()
    for _ in range(50):
        if count <= baseline:
            break
        await anyio.sleep(0.02)
        count = _connections()
    return count


def _rss() -> int:
    gc.collect()
    rss: int = psutil.Process().memory_info().rss
    return rss


@pytest.mark.anyio
async def test_thousand_concurrent_cold_requests_cause_one_fetch(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = BetterAuthMiddleware(ok, base_url=server.url)
    users = [secrets.token_urlsafe(16) for _ in range(1000)]
    tokens = [issuer.token(user_id=user) for user in users]
    statuses: Counter[int] = Counter()

    async def one(token: str) -> None:
        status, _ = await call(app, b"Bearer " + token.encode())
        statuses[status] += 1

    transport_statuses: Counter[int] = Counter()

    async def one_over_http(client: httpx.AsyncClient, token: str) -> None:
        response = await client.get("/", headers=bearer(token))
        transport_statuses[response.status_code] += 1

    async with anyio.create_task_group() as group:
        for token in tokens:
            group.start_soon(one, token)
    assert statuses == {200: 1000}
    assert server.requests == 1
    assert app.verifier.jwks.status().fetches == 1
    await app.verifier.jwks.aclose()

    # The same through HTTP (httpx.ASGITransport), on a second cold app.
    http_app = BetterAuthMiddleware(ok, base_url=server.url)
    async with (
        asgi_client(http_app) as client,
        anyio.create_task_group() as group,
    ):
        for token in tokens:
            group.start_soon(one_over_http, client, token)
    assert transport_statuses == {200: 1000}
    assert server.requests == 2
    await http_app.verifier.jwks.aclose()


@pytest.mark.anyio
async def test_flood_of_unknown_kids_causes_bounded_fetches(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = BetterAuthMiddleware(
        ok, base_url=server.url, key_set=KeySetOptions(refresh_cooldown=COOLDOWN)
    )
    assert (await call(app, b"Bearer " + issuer.token().encode()))[0] == 200
    claims = b64url(issuer.claims())
    statuses: Counter[int] = Counter()

    async def one() -> None:
        header = b64url({"alg": "EdDSA", "kid": secrets.token_urlsafe(24)})
        token = f"{header}.{claims}.{b64url(os.urandom(64))}"
        statuses[(await call(app, b"Bearer " + token.encode()))[0]] += 1

    started = anyio.current_time()
    for _ in range(3):  # waves of 1,000 concurrent requests, each kid new
        async with anyio.create_task_group() as group:
            for _ in range(1000):
                group.start_soon(one)
    elapsed = anyio.current_time() - started
    refetches = server.requests - 1
    print(f"3,000 unknown kids in {elapsed:.2f} s: {refetches} refetches")
    assert statuses == {401: 3000}
    assert 1 <= refetches <= 1 + elapsed / COOLDOWN
    await app.verifier.jwks.aclose()


@pytest.mark.anyio
async def test_hundred_thousand_distinct_tokens_leave_memory_bounded(
    server: JWKSServer, issuer: Issuer
) -> None:
    app = BetterAuthMiddleware(
        ok, base_url=server.url, key_set=KeySetOptions(refresh_cooldown=COOLDOWN)
    )
    mix = TokenMix(issuer)
    # Warm-up: imports, first fetch, allocator arenas; then the baseline.
    for index in range(2000):
        assert (await call(app, mix.authorization(index)))[0] == mix.expected(index)
    tasks_before = len(anyio.get_running_tasks())
    connections_before = _connections()
    fds_before = psutil.Process().num_fds()
    fetches_before = server.requests
    rss_before = _rss()

    statuses: Counter[int] = Counter()
    wrong: list[tuple[int, int]] = []
    leaked: list[int] = []
    next_index = 0

    async def worker(stop: int) -> None:
        nonlocal next_index
        while next_index < stop:
            index = next_index
            next_index += 1
            authorization = mix.authorization(index)
            status, body = await call(app, authorization)
            statuses[status] += 1
            if status != mix.expected(index):
                wrong.append((index, status))
            if authorization[7:] in body:
                leaked.append(index)
            # A served request waits on its socket; without a checkpoint these
            # tasks would never let a sleeping one (a cooldown wait) resume.
            await anyio.lowlevel.checkpoint()

    started = anyio.current_time()
    rss: list[int] = [rss_before]
    for stop in (REQUESTS // 2, REQUESTS):  # two halves, memory measured after each
        async with anyio.create_task_group() as group:
            for _ in range(WORKERS):
                group.start_soon(worker, stop)
        rss.append(_rss())
    elapsed = anyio.current_time() - started

    growth = rss[2] - rss[0]
    second_half = rss[2] - rss[1]
    refetches = server.requests - fetches_before
    print(
        f"{REQUESTS} distinct tokens in {elapsed:.1f} s: statuses {dict(statuses)}; RSS "
        + " -> ".join(f"{value / 2**20:.1f}" for value in rss)
        + f" MiB (growth {growth / 2**20:.1f} MiB, second half {second_half / 2**20:.1f} MiB); "
        f"token cache {len(app.cache)} entries; {refetches} key-set refetches"
    )
    assert sum(statuses.values()) == REQUESTS
    assert not wrong, wrong[:10]
    assert not leaked, leaked[:10]
    assert growth < RSS_BOUND
    # The verified-token cache is full by the first half: no growth beyond it after.
    assert len(app.cache) == app.cache.max_entries
    assert second_half < PLATEAU_BOUND
    # Unknown kids (one in a thousand) refetch at most once per cooldown.
    assert refetches <= 1 + elapsed / COOLDOWN
    assert len(anyio.get_running_tasks()) == tasks_before
    assert await _settled_connections(connections_before) <= connections_before
    assert psutil.Process().num_fds() <= fds_before
    await app.verifier.jwks.aclose()


# -- two uvicorn workers behind one port ------------------------------------------------------

WORKER_APP = textwrap.dedent(
    """
    import os

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from starlette_betterauth import BetterAuthMiddleware


    async def whoami(request):
        return JSONResponse({"pid": os.getpid(), "user": request.state.user.id})


    async def health(request):
        return JSONResponse({"pid": os.getpid()})


    app = Starlette(routes=[Route("/whoami", whoami), Route("/health", health)])
    # BETTER_AUTH_URL names the key server, as a deployment would.
    app.add_middleware(BetterAuthMiddleware, public=["/health"])
    """
)


def test_two_uvicorn_workers_both_serve(server: JWKSServer, issuer: Issuer, tmp_path: Path) -> None:
    (tmp_path / "worker_app.py").write_text(WORKER_APP)
    env = {"BETTER_AUTH_URL": server.url}
    workers: list[psutil.Process] = []
    with start_uvicorn(
        "worker_app:app", app_dir=tmp_path, env=env, workers=2, ready_path="/health"
    ) as uvicorn:
        process, base = uvicorn.process, uvicorn.url
        workers = psutil.Process(process.pid).children(recursive=True)
        children = {worker.pid for worker in workers}
        seen: Counter[int] = Counter()
        users: dict[str, str] = {}

        def one(_: int) -> tuple[int, dict[str, Any], str]:
            user = secrets.token_urlsafe(12)
            token = issuer.token(user_id=user)
            # A new connection per request, so the kernel hands them to either worker.
            with httpx.Client(base_url=base, timeout=10) as client:
                response = client.get("/whoami", headers=bearer(token))
            return response.status_code, response.json(), user

        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(50):  # rounds of 16 concurrent requests, until both answered
                for status, body, user in pool.map(one, range(16)):
                    assert status == 200, body
                    assert body["user"] == user
                    seen[body["pid"]] += 1
                    users[user] = body["pid"]
                if len(seen) == 2:
                    break
        print(f"two workers answered: {dict(seen)}; key-set fetches: {server.requests}")
        assert len(seen) == 2, f"only {dict(seen)} answered"
        assert set(seen) <= children
        # Each worker holds its own key-set cache: one fetch each.
        assert server.requests == 2
        with httpx.Client(base_url=base, timeout=10) as client:
            refused = client.get("/whoami", headers=bearer("not.a.jwt"))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert process.returncode is not None
    # The workers got the group's SIGTERM too; give them a bounded while to exit.
    _, alive = psutil.wait_procs(workers, timeout=15)
    for straggler in alive:
        straggler.kill()
    assert not alive, f"workers still running: {alive}"

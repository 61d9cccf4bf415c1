"""A failing key server, through HTTP to an app behind the middleware.

The key server is a real loopback :class:`JWKSServer` made to misbehave with its
fault knobs (``status``, ``delay``, ``body``, ``headers``) or stopped outright.
What must hold: a request gets 503 only while no usable keys exist; during an
outage the last good keys keep serving; the number of fetches stays bounded
however many requests arrive; and the cache recovers without a restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from _helpers import asgi_client, bearer, whoami
from starlette.applications import Starlette
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, JWKSCache, KeySetOptions
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey

pytestmark = pytest.mark.anyio

# Seconds a fetch may take; the slow server takes longer. Generous, so that a loaded machine
# (CI runs several suites side by side) never turns a slow answer into a timeout.
TIMEOUT = 2.0
BODY_CAP = 512 * 1024  # the cache's default max_body_size
HUGE = 64 * 1024 * 1024


class StreamedBody:
    """A body of ``total`` bytes streamed without Content-Length, counting what was sent."""

    def __init__(self, total: int, chunk_size: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = b'{"keys":[' + b" " * (chunk_size - 9)
        self.sent = 0
        self.exhausted = False
        self.finished = threading.Event()

    def __call__(self) -> Iterator[bytes]:
        try:
            while self.sent < self.total:
                yield self.chunk
                self.sent += len(self.chunk)
            self.exhausted = True
        finally:
            self.finished.set()


@dataclass
class Fault:
    """A way for the key server to fail, and the reason the cache must report."""

    apply: Callable[[JWKSServer], None]
    reason: str


def _status(code: int, **headers: str) -> Callable[[JWKSServer], None]:
    def apply(server: JWKSServer) -> None:
        server.status = code
        server.headers = dict(headers)

    return apply


def _body(body: bytes | Callable[[], Iterator[bytes]]) -> Callable[[JWKSServer], None]:
    def apply(server: JWKSServer) -> None:
        server.body = body

    return apply


def _key_set(*keys: Any) -> Callable[[JWKSServer], None]:
    return _body(json.dumps({"keys": list(keys)}).encode())


def _trickle() -> Iterator[bytes]:
    """A key set that arrives a few bytes at a time, never finishing within the timeout."""
    yield b'{"keys": ['
    for _ in range(int(TIMEOUT * 40)):
        time.sleep(0.05)
        yield b" "


def _slow(server: JWKSServer) -> None:
    server.delay = TIMEOUT * 10


def _stop(server: JWKSServer) -> None:
    server.stop()


def _rsa_1024() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    return jwk | {"alg": "RS256", "kid": "small"}


_ES256 = SigningKey("ES256").public_jwk
FAULTS: dict[str, Fault] = {
    "slower-than-timeout": Fault(_slow, f"did not answer within {TIMEOUT} s"),
    "http-500": Fault(_status(500), "HTTP 500"),
    "http-503": Fault(_status(503, **{"Retry-After": "1"}), "HTTP 503"),
    "http-404": Fault(_status(404), "HTTP 404"),
    "http-302-redirect": Fault(_status(302, Location="http://127.0.0.1:9/jwks"), "HTTP 302"),
    "invalid-json": Fault(_body(b'{"keys": [}'), "not valid JSON"),
    "empty-body": Fault(_body(b""), "not valid JSON"),
    "html": Fault(_body(b"<html><body>Bad gateway</body></html>"), "not valid JSON"),
    "binary": Fault(_body(bytes(range(256))), "not valid JSON"),
    "json-array": Fault(_body(b'[{"kty": "OKP"}]'), '"keys" list'),
    "json-object-without-keys": Fault(_body(b'{"jwks": []}'), '"keys" list'),
    "keys-is-an-object": Fault(_body(b'{"keys": {"kty": "OKP"}}'), '"keys" list'),
    "keys-is-null": Fault(_body(b'{"keys": null}'), '"keys" list'),
    "json-string": Fault(_body(b'"keys"'), '"keys" list'),
    "json-nan": Fault(_body(b"NaN"), '"keys" list'),
    "empty-key-set": Fault(_key_set(), "no usable key"),
    "only-hmac-key": Fault(
        _key_set({"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"}), "no usable key"
    ),
    "only-private-key": Fault(_key_set(dict(_ES256, d="AAAA")), "no usable key"),
    "only-encryption-key": Fault(_key_set(dict(_ES256, use="enc")), "no usable key"),
    "only-mismatched-alg": Fault(_key_set(dict(_ES256, alg="RS256")), "no usable key"),
    "only-keys-without-kid": Fault(
        _key_set({k: v for k, v in _ES256.items() if k != "kid"}), "no usable key"
    ),
    "only-unsupported-curve": Fault(
        _key_set({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}),
        "no usable key",
    ),
    "only-small-rsa-key": Fault(_key_set(_rsa_1024()), "no usable key"),
    "only-non-objects": Fault(_key_set("key", 1, None, []), "no usable key"),
    "trickled-body": Fault(_body(_trickle), f"did not answer within {TIMEOUT} s"),
    "declared-huge-body": Fault(_body(b" " * (20 * 1024 * 1024)), f"larger than {BODY_CAP}"),
    "streamed-huge-body": Fault(_body(StreamedBody(HUGE)), f"larger than {BODY_CAP}"),
    "connection-refused": Fault(_stop, "could not be reached"),
}
# The outages a warm cache is put through (a representative of each kind).
OUTAGES = (
    "slower-than-timeout",
    "http-500",
    "invalid-json",
    "json-array",
    "only-hmac-key",
    "streamed-huge-body",
    "connection-refused",
)


def make_app(url: str, **key_set: Any) -> BetterAuthMiddleware:
    options: dict[str, Any] = {"timeout": TIMEOUT, "retry_interval": 60.0}
    options.update(key_set)
    return BetterAuthMiddleware(
        Starlette(routes=[Route("/whoami", whoami)]),
        base_url=url,
        key_set=KeySetOptions(**options),
    )


def status_of(app: BetterAuthMiddleware) -> Any:
    return app.verifier.jwks.status()


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def server(issuer: Issuer) -> Iterator[JWKSServer]:
    server = JWKSServer(issuer).start()
    yield server
    server.stop()


async def burst(
    client: httpx.AsyncClient, tokens: list[str], *, path: str = "/whoami"
) -> list[int]:
    """Send one request per token, all at once; return the statuses."""
    statuses: list[int] = []

    async def one(token: str) -> None:
        response = await client.get(path, headers=bearer(token))
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "temporarily_unavailable"
            assert token not in response.text

    async with anyio.create_task_group() as group:
        for token in tokens:
            group.start_soon(one, token)
    return statuses


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[BetterAuthMiddleware], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(app: BetterAuthMiddleware) -> httpx.AsyncClient:
        client = asgi_client(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def _settle(server_side: StreamedBody | None) -> None:
    if server_side is not None:
        # The server thread notices the hang-up on its next write.
        assert server_side.finished.wait(10)


@pytest.mark.parametrize("name", list(FAULTS))
async def test_cold_cache_fault_is_503_with_one_fetch(
    name: str,
    server: JWKSServer,
    issuer: Issuer,
    client_for: Callable[[BetterAuthMiddleware], httpx.AsyncClient],
) -> None:
    fault = FAULTS[name]
    app = make_app(server.url)
    client = client_for(app)
    fault.apply(server)
    tokens = [issuer.token() for _ in range(30)]
    for _ in range(2):  # a wave of concurrent requests, then another
        assert await burst(client, tokens) == [503] * len(tokens)
    status = status_of(app)
    assert not status.ready
    assert status.fetches == 1
    assert fault.reason in (status.last_error or "")
    streamed = server.body if isinstance(server.body, StreamedBody) else None
    _settle(streamed)
    if streamed is not None:
        assert not streamed.exhausted
        assert streamed.sent < HUGE // 4, f"{streamed.sent} bytes were sent for a cap of {BODY_CAP}"
    await app.verifier.jwks.aclose()


async def test_streamed_body_is_cut_near_the_cap(
    server: JWKSServer,
    issuer: Issuer,
    client_for: Callable[[BetterAuthMiddleware], httpx.AsyncClient],
) -> None:
    """Tens of megabytes offered, a few read: reported for the record."""
    body = StreamedBody(HUGE)
    server.body = body
    app = make_app(server.url)
    assert await burst(client_for(app), [issuer.token()]) == [503]
    _settle(body)
    print(f"streamed body: {body.sent} of {HUGE} bytes sent before the cache hung up")
    assert not body.exhausted
    assert body.sent < HUGE // 4
    await app.verifier.jwks.aclose()


def _restart(server: JWKSServer, port: int) -> JWKSServer:
    """Serve the same issuer on the same port again (the old server stays stopped)."""
    return JWKSServer(server.issuer, port=port).start()


@pytest.mark.parametrize("name", OUTAGES)
async def test_outage_serves_last_good_keys_and_recovers(
    name: str,
    server: JWKSServer,
    issuer: Issuer,
    client_for: Callable[[BetterAuthMiddleware], httpx.AsyncClient],
) -> None:
    cooldown = 0.2
    app = make_app(server.url, ttl=0.2, refresh_cooldown=cooldown)
    client = client_for(app)
    tokens = [issuer.token() for _ in range(60)]
    assert await burst(client, tokens[:5]) == [200] * 5
    warm = status_of(app).fetches

    # The outage: routine refreshes fail, requests keep being served.
    port = int(server.url.rsplit(":", 1)[1])
    FAULTS[name].apply(server)
    await anyio.sleep(0.3)  # the TTL is over: the next request refreshes
    for _ in range(2):
        assert await burst(client, tokens) == [200] * len(tokens)
    status = status_of(app)
    assert status.ready
    # One failed refresh; the next waits for retry_interval, however many requests come.
    assert status.fetches == warm + 1
    assert FAULTS[name].reason in (status.last_error or "")

    # A kid the loaded keys lack cannot be checked while the server is down: it may be
    # a rotated key, so it gets 503 (retry later), not 401; refetches stay rate-limited.
    rotated = issuer.rotate()
    started = anyio.current_time()
    unknown = [issuer.token(key=rotated) for _ in range(30)]
    assert await burst(client, unknown) == [503] * len(unknown)
    elapsed = anyio.current_time() - started
    assert status_of(app).fetches - (warm + 1) <= 1 + elapsed / cooldown

    # Recovery, without restarting the app: the rotated key is accepted on first use.
    if name == "connection-refused":
        server = _restart(server, port)
    else:
        server.reset()
    try:
        assert await burst(client, unknown[:10]) == [200] * 10
        assert await burst(client, tokens[:10]) == [200] * 10
        status = status_of(app)
        assert status.last_error is None
        assert set(status.kids) == {key.kid for key in issuer.keys}
    finally:
        if name == "connection-refused":
            server.stop()
    await app.verifier.jwks.aclose()


async def test_cold_outage_recovers_after_retry_interval(
    server: JWKSServer,
    issuer: Issuer,
    client_for: Callable[[BetterAuthMiddleware], httpx.AsyncClient],
) -> None:
    retry = 0.3
    app = make_app(server.url, retry_interval=retry)
    client = client_for(app)
    server.status = 500
    tokens = [issuer.token() for _ in range(100)]
    started = anyio.current_time()
    assert await burst(client, tokens) == [503] * len(tokens)
    assert status_of(app).fetches <= 1 + (anyio.current_time() - started) / retry
    server.reset()
    await anyio.sleep(retry + 0.1)
    assert await burst(client, tokens) == [200] * len(tokens)
    status = status_of(app)
    assert status.ready
    assert status.fetches <= 2 + (anyio.current_time() - started) / retry
    assert server.requests == 1  # the one fetch after recovery
    await app.verifier.jwks.aclose()


async def test_stale_keys_run_out_then_503_then_recover(
    server: JWKSServer,
    issuer: Issuer,
    client_for: Callable[[BetterAuthMiddleware], httpx.AsyncClient],
) -> None:
    """Stale keys serve for ``max_stale`` past their TTL; then 503 until the server is back."""
    app = make_app(server.url, ttl=0.1, max_stale=0.2, retry_interval=0.05)
    client = client_for(app)
    token = issuer.token()
    assert await burst(client, [token]) == [200]
    server.status = 500
    await anyio.sleep(0.5)  # past ttl + max_stale
    assert await burst(client, [token] * 20) == [503] * 20
    assert not status_of(app).ready
    server.reset()
    await anyio.sleep(0.1)
    assert await burst(client, [token] * 20) == [200] * 20
    assert status_of(app).ready
    await app.verifier.jwks.aclose()


async def test_failing_server_under_sustained_load_sees_bounded_fetches(
    server: JWKSServer,
    issuer: Issuer,
    client_for: Callable[[BetterAuthMiddleware], httpx.AsyncClient],
) -> None:
    """Waves of requests for a second against a failing server: one fetch per retry interval."""
    retry = 0.25
    app = make_app(server.url, retry_interval=retry)
    client = client_for(app)
    server.status = 500
    tokens = [issuer.token() for _ in range(50)]
    started = anyio.current_time()
    requests = 0
    while anyio.current_time() - started < 1.0 and requests < 50_000:
        assert await burst(client, tokens) == [503] * len(tokens)
        requests += len(tokens)
    elapsed = anyio.current_time() - started
    print(f"{requests} requests in {elapsed:.2f} s caused {server.requests} fetches")
    fetches = status_of(app).fetches
    assert fetches <= 1 + elapsed / retry + 1
    # A fetch that timed out on a loaded machine may never have reached the server.
    assert server.requests <= fetches
    await app.verifier.jwks.aclose()


async def test_cache_without_middleware_keeps_keys_through_an_outage(
    server: JWKSServer, issuer: Issuer
) -> None:
    """The same guarantee for JWKSCache used alone (CLI, background jobs)."""
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(ttl=0.1, retry_interval=60))
    kid = issuer.current_key.kid
    await cache.refresh()
    server.stop()
    await anyio.sleep(0.2)
    for _ in range(100):
        assert (await cache.get_key(kid)).kid == kid
    assert cache.status().fetches == 2
    assert "could not be reached" in (cache.status().last_error or "")
    await cache.aclose()

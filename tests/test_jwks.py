"""JWKSCache against a real loopback key server: fetch counts, rotation, failures."""

from __future__ import annotations

import json
import logging
import secrets

import anyio
import httpx
import pytest

from starlette_betterauth import JWKSCache, KeySetOptions
from starlette_betterauth.errors import (
    ConfigurationError,
    KeySetFetchError,
    KeySetInvalidError,
    UnknownKeyError,
)
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey, jwks_transport

pytestmark = pytest.mark.anyio


async def test_concurrent_cold_requests_cause_one_fetch(server: JWKSServer, issuer: Issuer) -> None:
    cache = JWKSCache(server.jwks_url)
    kid = issuer.current_key.kid
    found: list[str] = []

    async def lookup() -> None:
        found.append((await cache.get_key(kid)).kid)

    async with anyio.create_task_group() as group:
        for _ in range(200):
            group.start_soon(lookup)
    assert found == [kid] * 200
    assert server.requests == 1
    await cache.aclose()


async def test_random_kids_cause_at_most_one_fetch_per_cooldown(
    server: JWKSServer, issuer: Issuer
) -> None:
    cooldown = 1.0
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(refresh_cooldown=cooldown))
    await cache.get_key(issuer.current_key.kid)
    kids = [secrets.token_hex(16) for _ in range(300)]
    refused = 0

    async def lookup(kid: str) -> None:
        nonlocal refused
        try:
            await cache.get_key(kid)
        except UnknownKeyError:
            refused += 1

    # All 300 arrive within the cooldown of the first fetch: they share one refetch.
    async with anyio.create_task_group() as group:
        for kid in kids:
            group.start_soon(lookup, kid)
    assert refused == 300
    assert server.requests == 2  # the first fetch and one shared refetch

    # A sustained trickle: at most one fetch per cooldown, however many requests.
    start = anyio.current_time()
    burst = 0
    while anyio.current_time() - start < 1.5 and burst < 10_000:
        burst += 1
        await lookup(secrets.token_hex(16))
    elapsed = anyio.current_time() - start
    assert server.requests - 2 <= elapsed / cooldown + 2
    await cache.aclose()


async def test_rotated_key_is_accepted_on_first_use(server: JWKSServer, issuer: Issuer) -> None:
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(refresh_cooldown=0.5))
    old = issuer.current_key.kid
    await cache.get_key(old)
    new = issuer.rotate().kid
    # Within the cooldown of the last fetch: the lookup waits for the next fetch.
    assert (await cache.get_key(new)).kid == new
    assert (await cache.get_key(old)).kid == old
    assert server.requests == 2
    await cache.aclose()


async def test_failed_refresh_keeps_last_good_keys_and_recovers(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = JWKSCache(
        server.jwks_url, options=KeySetOptions(ttl=0.05, retry_interval=0.05, refresh_cooldown=0)
    )
    kid = issuer.current_key.kid
    await cache.get_key(kid)
    server.status = 500
    await anyio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="starlette_betterauth"):
        assert (await cache.get_key(kid)).kid == kid  # served from the last good set
    status = cache.status()
    assert status.ready
    assert status.failures == 1
    assert status.last_error == "the key server answered HTTP 500"
    assert "still serving the previous keys" in caplog.text
    # While down, lookups make at most one fetch per retry interval.
    before = server.requests
    for _ in range(100):
        await cache.get_key(kid)
    assert server.requests - before <= 2
    # Recovery without restart: the rotated key appears once the server is back.
    new = issuer.rotate().kid
    server.status = 200
    await anyio.sleep(0.1)
    assert (await cache.get_key(new)).kid == new
    assert cache.status().last_error is None
    await cache.aclose()


async def test_no_keys_and_server_down_raises_with_bounded_fetches(server: JWKSServer) -> None:
    server.status = 503
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(retry_interval=60))
    for _ in range(50):
        with pytest.raises(KeySetFetchError, match="HTTP 503"):
            await cache.get_key("any")
    assert server.requests == 1
    assert not cache.status().ready
    await cache.aclose()


async def test_stale_keys_expire_after_max_stale(server: JWKSServer, issuer: Issuer) -> None:
    cache = JWKSCache(
        server.jwks_url,
        options=KeySetOptions(ttl=0.05, max_stale=0.05, retry_interval=0, refresh_cooldown=0),
    )
    await cache.get_key(issuer.current_key.kid)
    server.status = 500
    await anyio.sleep(0.2)
    with pytest.raises(KeySetFetchError):
        await cache.get_key(issuer.current_key.kid)


async def test_cache_control_max_age_is_honoured(server: JWKSServer, issuer: Issuer) -> None:
    server.headers = {"Cache-Control": "public, max-age=3600"}
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(ttl=0.01, min_ttl=0.01))
    await cache.get_key(issuer.current_key.kid)
    await anyio.sleep(0.05)
    await cache.get_key(issuer.current_key.kid)
    assert server.requests == 1
    server.headers = {"Cache-Control": "no-store"}
    capped = JWKSCache(
        server.jwks_url, options=KeySetOptions(ttl=3600, min_ttl=0.01, refresh_cooldown=0)
    )
    await capped.get_key(issuer.current_key.kid)
    await anyio.sleep(0.05)
    await capped.get_key(issuer.current_key.kid)
    assert server.requests == 3
    await cache.aclose()
    await capped.aclose()


async def test_unusable_keys_are_skipped_with_reasons(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    good = issuer.current_key.public_jwk
    private = dict(SigningKey("ES256").public_jwk, d="AAAA")
    mismatch = dict(SigningKey("ES256").public_jwk, alg="RS256")
    encryption = dict(SigningKey("ES256").public_jwk, use="enc")
    server.body = json.dumps(
        {
            "keys": [
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
                private,
                mismatch,
                encryption,
                {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
                {"kid": "no-kty"},
                "not an object",
                good,
            ]
        }
    ).encode()
    cache = JWKSCache(server.jwks_url)
    with caplog.at_level(logging.WARNING, logger="starlette_betterauth"):
        await cache.refresh()
    status = cache.status()
    assert status.kids == (good["kid"],)
    reasons = dict(status.skipped)
    assert len(reasons) == 7
    assert "private or symmetric" in reasons["'hmac'"]
    assert "does not fit" in reasons[repr(mismatch["kid"])]
    assert "use is 'enc'" in reasons[repr(encryption["kid"])]
    assert "not supported" in reasons["'p384'"]
    assert "not a JSON object" in reasons["key #6"]
    assert caplog.text.count("skipping") == 7


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'["keys"]', '"keys" list'),
        (b'{"keys": {}}', '"keys" list'),
        (b'{"keys": []}', "no usable key"),
    ],
)
async def test_invalid_documents(server: JWKSServer, body: bytes, reason: str) -> None:
    server.body = body
    cache = JWKSCache(server.jwks_url)
    with pytest.raises(KeySetInvalidError, match=reason):
        await cache.refresh()


async def test_body_over_the_cap_is_refused(server: JWKSServer) -> None:
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(max_body_size=100))
    with pytest.raises(KeySetInvalidError, match="larger than 100 bytes"):
        await cache.refresh()


async def test_redirects_are_not_followed(server: JWKSServer) -> None:
    server.status = 302
    server.headers = {"Location": server.jwks_url}
    cache = JWKSCache(server.jwks_url)
    with pytest.raises(KeySetFetchError, match="HTTP 302"):
        await cache.refresh()
    assert server.requests == 1


async def test_connection_refused() -> None:
    with JWKSServer() as server:
        url = server.jwks_url
    cache = JWKSCache(url)
    with pytest.raises(KeySetFetchError, match="could not be reached"):
        await cache.refresh()


async def test_injected_client_and_transport(issuer: Issuer) -> None:
    async with httpx.AsyncClient(transport=jwks_transport(issuer)) as client:
        cache = JWKSCache("https://auth.example/api/auth/jwks", client=client)
        assert (await cache.get_key(issuer.current_key.kid)).algorithms == {"EdDSA"}
        await cache.aclose()  # the caller's client stays open
        assert not client.is_closed


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError):
        JWKSCache("file:///etc/passwd")
    with pytest.raises(ConfigurationError):
        JWKSCache("https://a.example/jwks", algorithms=["HS256"])
    with pytest.raises(ConfigurationError):
        JWKSCache("https://a.example/jwks", options=KeySetOptions(ttl=0))
    with pytest.raises(ConfigurationError):
        JWKSCache("https://a.example/jwks", options=KeySetOptions(max_body_size=0))


async def test_each_refusal_raises_a_fresh_exception(server: JWKSServer) -> None:
    server.status = 500
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(retry_interval=60))
    raised: list[KeySetFetchError] = []
    for _ in range(3):
        try:
            await cache.get_key("any")
        except KeySetFetchError as exc:
            raised.append(exc)
    assert len({id(exc) for exc in raised}) == 3  # no traceback piles up on one object
    assert all(exc.message == "the key server answered HTTP 500" for exc in raised)


async def test_long_cache_control_keeps_keys_usable(server: JWKSServer, issuer: Issuer) -> None:
    server.headers = {"Cache-Control": "max-age=100000"}
    cache = JWKSCache(
        server.jwks_url, options=KeySetOptions(ttl=0.05, min_ttl=0.01, max_stale=0.05)
    )
    await cache.get_key(issuer.current_key.kid)
    await anyio.sleep(0.2)
    assert (await cache.get_key(issuer.current_key.kid)).kid == issuer.current_key.kid
    assert cache.status().ready
    assert server.requests == 1


async def test_key_with_a_non_string_alg_is_skipped(server: JWKSServer, issuer: Issuer) -> None:
    odd = dict(SigningKey().public_jwk, alg=["EdDSA"])
    server.body = json.dumps({"keys": [odd, issuer.current_key.public_jwk]}).encode()
    cache = JWKSCache(server.jwks_url)
    assert (await cache.get_key(issuer.current_key.kid)).kid == issuer.current_key.kid
    assert cache.status().skipped == ((repr(odd["kid"]), "its alg is not a string"),)


async def test_unknown_kid_during_an_outage_is_503_not_401(
    server: JWKSServer, issuer: Issuer
) -> None:
    cache = JWKSCache(server.jwks_url, options=KeySetOptions(refresh_cooldown=0))
    await cache.get_key(issuer.current_key.kid)
    server.status = 500
    rotated = issuer.rotate().kid
    with pytest.raises(KeySetFetchError):
        await cache.get_key(rotated)
    server.status = 200
    await anyio.sleep(cache.options.retry_interval if cache.options.retry_interval < 0.1 else 0)
    assert (await cache.get_key(issuer.current_key.kid)).kid == issuer.current_key.kid


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_intervals_must_be_finite(value: float) -> None:
    with pytest.raises(ConfigurationError, match="refresh_cooldown"):
        JWKSCache("https://a.example/jwks", options=KeySetOptions(refresh_cooldown=value))
    with pytest.raises(ConfigurationError, match="retry_interval"):
        JWKSCache("https://a.example/jwks", options=KeySetOptions(retry_interval=value))

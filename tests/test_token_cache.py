"""The verified-token cache, through the middleware, with real tokens and a loopback JWKS.

Each safety property of the cache has its own test: an entry never outlives the
token's exp nor the cache TTL, tokens of a key that left the key set are
refused, the cache is bounded and evicts the oldest entry, only successful
verifications are remembered, and it can be switched off. The last tests drive
the cache itself: eviction order after entries are dropped, and tokens that end alike.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
import pytest
from _helpers import asgi_client, bearer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, JWKSCache, KeySetOptions
from starlette_betterauth._keys import VerificationKey
from starlette_betterauth._token_cache import TokenCache
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer, JWKSServer

pytestmark = pytest.mark.anyio


async def whoami(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.user.id)


class Events:
    """Records the middleware's on_event calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: Mapping[str, Any]) -> None:
        self.seen.append((name, dict(data)))

    def last(self, name: str) -> dict[str, Any]:
        return [data for seen, data in self.seen if seen == name][-1]

    def count(self, name: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == name)


def middleware(server: JWKSServer, events: Events, **options: Any) -> BetterAuthMiddleware:
    app = Starlette(routes=[Route("/me", whoami)])
    return BetterAuthMiddleware(app, base_url=server.url, on_event=events, **options)


async def get(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.get("/me", headers=bearer(token))


async def test_a_repeated_token_is_verified_once(server: JWKSServer, issuer: Issuer) -> None:
    events = Events()
    app = middleware(server, events)
    token = issuer.token(user_id="u1")
    async with asgi_client(app) as c:
        outcomes = [(await get(c, token)).text for _ in range(5)]
    assert outcomes == ["u1"] * 5
    assert [data["cached"] for name, data in events.seen if name == "accepted"] == [
        False,
        True,
        True,
        True,
        True,
    ]
    assert len(app.cache) == 1


async def test_an_entry_never_outlives_the_tokens_exp(server: JWKSServer, issuer: Issuer) -> None:
    events = Events()
    app = middleware(server, events, leeway=0)
    token = issuer.token(user_id="u1", expires_in=2)
    exp = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["exp"]
    async with asgi_client(app) as c:
        assert (await get(c, token)).status_code == 200
        assert (await get(c, token)).status_code == 200
        assert events.last("accepted")["cached"] is True
        await anyio.sleep(max(0.0, exp - time.time()) + 0.05)
        expired = await get(c, token)
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert events.last("refused")["reason"] == "ExpiredTokenError"
    assert len(app.cache) == 0


async def test_an_entry_never_outlives_the_cache_ttl(server: JWKSServer, issuer: Issuer) -> None:
    events = Events()
    app = middleware(server, events, token_cache_ttl=0.2)
    token = issuer.token()
    async with asgi_client(app) as c:
        await get(c, token)
        await get(c, token)
        assert events.last("accepted")["cached"] is True
        await anyio.sleep(0.3)
        assert (await get(c, token)).status_code == 200
    assert events.last("accepted")["cached"] is False  # verified again, then cached again
    assert len(app.cache) == 1


async def test_tokens_of_a_removed_key_are_refused(server: JWKSServer, issuer: Issuer) -> None:
    events = Events()
    app = middleware(
        server, events, key_set=KeySetOptions(ttl=0.2, min_ttl=0.2, refresh_cooldown=0)
    )
    old_key = issuer.current_key
    old_token = issuer.token(key=old_key, user_id="old")
    async with asgi_client(app) as c:
        assert (await get(c, old_token)).text == "old"
        assert (await get(c, old_token)).text == "old"
        assert events.last("accepted")["cached"] is True
        new_key = issuer.rotate()
        issuer.remove_key(old_key.kid)
        await anyio.sleep(0.3)
        # A token the cache has not seen makes the middleware refresh the stale key set.
        assert (await get(c, issuer.token(key=new_key, user_id="new"))).text == "new"
        assert app.verifier.jwks.keys.keys() == {new_key.kid}
        refused = await get(c, old_token)
    assert refused.status_code == 401
    assert events.last("refused")["reason"] == "UnknownKeyError"
    assert len(app.cache) == 1  # the new token only


async def test_the_cache_is_bounded_and_evicts_the_oldest(
    server: JWKSServer, issuer: Issuer
) -> None:
    events = Events()
    app = middleware(server, events, token_cache_size=3)
    tokens = [issuer.token(user_id=f"u{i}") for i in range(5)]
    async with asgi_client(app) as c:
        for token in tokens:
            assert (await get(c, token)).status_code == 200
        assert len(app.cache) == 3
        await get(c, tokens[4])
        assert events.last("accepted")["cached"] is True
        await get(c, tokens[0])  # evicted first: verified again, evicting tokens[2]
        assert events.last("accepted")["cached"] is False
        await get(c, tokens[3])
        assert events.last("accepted")["cached"] is True
        await get(c, tokens[2])
        assert events.last("accepted")["cached"] is False
    assert len(app.cache) == 3


@pytest.mark.parametrize(
    ("kind", "status"),
    [("expired", 401), ("bad signature", 401), ("wrong audience", 401), ("banned", 403)],
)
async def test_failures_are_never_cached(
    server: JWKSServer, issuer: Issuer, kind: str, status: int
) -> None:
    events = Events()
    app = middleware(server, events)
    if kind == "expired":
        token = issuer.expired_token()
    elif kind == "bad signature":
        header, payload, _ = issuer.token().split(".")
        token = f"{header}.{payload}.{issuer.token().split('.')[2]}"
    elif kind == "wrong audience":
        token = issuer.token(aud="https://elsewhere.example")
    else:
        token = issuer.token(banned=True)
    async with asgi_client(app) as c:
        statuses = [(await get(c, token)).status_code for _ in range(3)]
    assert statuses == [status] * 3
    assert events.count("refused") == 3
    assert len(app.cache) == 0


async def test_a_token_that_failed_is_not_remembered_once_it_works(
    server: JWKSServer, issuer: Issuer
) -> None:
    # Signed by a key the key set does not list yet: refused, then accepted once it is listed.
    events = Events()
    app = middleware(server, events, key_set=KeySetOptions(refresh_cooldown=0))
    pending = issuer.rotate()
    issuer.remove_key(pending.kid)
    token = issuer.token(key=pending, user_id="later")
    async with asgi_client(app) as c:
        assert (await get(c, token)).status_code == 401
        assert len(app.cache) == 0
        issuer.keys.append(pending)
        assert (await get(c, token)).text == "later"
    assert events.last("accepted")["cached"] is False
    assert len(app.cache) == 1


@pytest.mark.parametrize("options", [{"token_cache_size": 0}, {"token_cache_ttl": 0}])
async def test_the_cache_can_be_switched_off(
    server: JWKSServer, issuer: Issuer, options: dict[str, Any]
) -> None:
    events = Events()
    app = middleware(server, events, **options)
    token = issuer.token()
    async with asgi_client(app) as c:
        statuses = [(await get(c, token)).status_code for _ in range(3)]
    assert statuses == [200] * 3
    assert [data["cached"] for name, data in events.seen if name == "accepted"] == [False] * 3
    assert len(app.cache) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"token_cache_size": -1},
        {"token_cache_ttl": -1.0},
        {"token_cache_ttl": float("nan")},
        {"token_cache_ttl": float("inf")},
    ],
)
def test_nonsense_cache_settings_are_refused(options: dict[str, Any]) -> None:
    app = Starlette()
    with pytest.raises(ConfigurationError, match="token_cache"):
        BetterAuthMiddleware(app, base_url="http://127.0.0.1:9", **options)


def _key(kid: str) -> VerificationKey:
    return VerificationKey(
        kid=kid,
        kty="OKP",
        crv="Ed25519",
        algorithms=frozenset({"EdDSA"}),
        key=None,
        check=lambda signing_input, signature: False,
    )


Value = tuple[str, tuple[str, ...]]


class LiveKeys:
    """A stand-in key set: the keys it holds are loaded; it serves until ``until``."""

    def __init__(self, keys: list[VerificationKey], until: float = math.inf) -> None:
        self.keys = list(keys)
        self.live_key_ids = {id(key) for key in keys}
        self.until = until

    def append(self, key: VerificationKey) -> None:
        self.keys.append(key)
        self.live_key_ids.add(id(key))

    def remove(self, key: VerificationKey) -> None:
        self.keys.remove(key)
        self.live_key_ids.discard(id(key))

    def usable_until(self) -> float:
        return self.until


def _cache(live: list[VerificationKey] | LiveKeys, size: int = 3) -> TokenCache[Value]:
    return TokenCache(
        max_entries=size,
        ttl=60.0,
        leeway=0.0,
        key_set=live if isinstance(live, LiveKeys) else LiveKeys(live),
    )


def test_an_entry_never_outlives_the_time_its_key_set_may_serve() -> None:
    key = _key("k")
    live = LiveKeys([key], until=time.monotonic() + 0.2)
    cache = _cache(live)
    cache.put("t0", ("u0", ()), key, None)
    assert cache.get("t0") == ("u0", ())
    time.sleep(0.3)  # the key set's usable time is over; the cache ttl (60 s) is not
    assert cache.get("t0") is None
    live.until = time.monotonic() + 60  # a refetch: what is put now lasts
    cache.put("t0", ("u0", ()), key, None)
    assert cache.get("t0") == ("u0", ())


async def test_a_fetch_shortening_the_usable_time_retires_cached_entries(
    server: JWKSServer, issuer: Issuer
) -> None:
    """Entries are bounded by the key set's usable time when put; a refetch cutting it short
    (here no-store after a day's max-age), then an outage, must not leave them standing."""
    server.headers = {"Cache-Control": "public, max-age=86400"}
    jwks = JWKSCache(
        server.jwks_url,
        options=KeySetOptions(min_ttl=0.1, max_stale=0.1, retry_interval=0, refresh_cooldown=0),
    )
    cache: TokenCache[Value] = TokenCache(max_entries=10, ttl=300.0, leeway=0.0, key_set=jwks)
    key = await jwks.get_key(issuer.current_key.kid)
    cache.put("token", ("user", ()), key, None)
    server.headers = {"Cache-Control": "no-store"}
    await jwks.refresh()  # the same key, now usable for min_ttl + max_stale only
    assert cache.get("token") is None  # verified under the longer promise: verified again
    fresh = await jwks.get_key(issuer.current_key.kid)
    cache.put("token", ("user", ()), fresh, None)
    assert cache.get("token") == ("user", ())
    await jwks.refresh()  # an unchanged promise keeps the key, and the entry
    assert cache.get("token") == ("user", ())
    server.status = 500
    await anyio.sleep(0.3)  # past min_ttl + max_stale, with every refetch failing
    assert not jwks.is_current(fresh)
    assert cache.get("token") is None
    await jwks.aclose()


def test_an_entry_dropped_and_put_again_is_evicted_as_a_new_one() -> None:
    old, new = _key("old"), _key("new")
    live = LiveKeys([old, new])
    cache = _cache(live)
    cache.put("t0", ("u0", ()), old, None)
    cache.put("t1", ("u1", ()), new, None)
    cache.put("t2", ("u2", ()), new, None)
    live.remove(old)
    assert cache.get("t0") is None  # its key left the key set: dropped
    assert len(cache) == 2
    cache.put("t0", ("u0 again", ()), new, None)
    cache.put("t3", ("u3", ()), new, None)  # full: evicts t1, the oldest still held
    assert len(cache) == 3
    assert cache.get("t1") is None
    assert cache.get("t0") == ("u0 again", ())
    assert cache.get("t2") == ("u2", ())
    cache.put("t4", ("u4", ()), new, None)  # then t2
    assert cache.get("t2") is None
    assert [cache.get(t) for t in ("t0", "t3", "t4")] == [("u0 again", ()), ("u3", ()), ("u4", ())]


def test_entries_dropped_over_and_over_keep_the_cache_bounded() -> None:
    keys = [_key(f"k{n}") for n in range(200)]
    live = LiveKeys(keys)
    cache = _cache(live)
    for n, key in enumerate(keys):
        token = f"t{n % 5}"
        cache.put(token, (token, ()), key, None)
        live.remove(key)
        assert cache.get(token) is None
        assert len(cache) == 0
        assert len(cache._order) <= 2 * cache.max_entries
    kept = _key("kept")
    live.append(kept)
    for n in range(5):
        cache.put(f"t{n}", (f"u{n}", ()), kept, None)
    assert [cache.get(f"t{n}") for n in range(5)] == [
        None,
        None,
        ("u2", ()),
        ("u3", ()),
        ("u4", ()),
    ]


def test_tokens_that_end_alike_each_get_their_own_entry() -> None:
    key = _key("k")
    cache = _cache([key], size=10)
    tail = "x" * 64
    tokens = [f"a.b.{tail}", f"c.d.{tail}", tail]
    for n, token in enumerate(tokens):
        cache.put(token, (f"u{n}", ()), key, None)
    for _ in range(3):
        assert [cache.get(t) for t in tokens] == [("u0", ()), ("u1", ()), ("u2", ())]
    assert cache.get(f"e.f.{tail}") is None

"""In-process ASGI benchmark: what the middleware adds to each request.

One small Starlette app is called directly (no server, no sockets), bare and
wrapped in ``BetterAuthMiddleware``, interleaved in one run on one event loop:

- repeated token: every request carries the same token, answered from the
  verified-token cache after the first;
- the same with cold caches: before each request the CPU's private caches are
  filled with other data, as the server's own work and the kernel's fill them
  between the requests of a busy server; only the request is timed. Every
  distinct operation then pays for its code and data coming from memory, which
  is what a middleware mostly costs behind a real server;
- first-seen tokens: every request carries a token the middleware has not seen
  (a pool larger than the cache, cycled, so each one is verified in full and
  evicts another), for each algorithm, next to the bare signature check of the
  same signature (libsodium's for EdDSA when PyNaCl is installed, as the
  package uses it; ``cryptography``'s otherwise) so the overhead beyond the
  signature shows, and next to the lean PyJWT middleware of
  ``bench/apps/pyjwt_asgi.py`` around the same app;
- the floor: a middleware doing only what every JWT verifier must, the same
  signature check and the payload's base64 and JSON decoding (both in C), with
  everything prepared in advance: what that costs beyond the signature, in
  place, is what no verifier built on CPython's ``json`` can go under.

Run: ``python bench/asgi.py`` (``--quick`` for a smoke run; ``--no-libsodium``
measures the ``cryptography`` path for EdDSA).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import importlib
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from benchkit import (
    ALGORITHMS,
    interleaved,
    machine,
    median,
    paired_median,
    quiet_gc,
    table,
    timed_loop,
    verdict,
)
from jwt.api_jwk import PyJWK
from micro import cycling, floor_verifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starlette_betterauth import BetterAuthMiddleware, KeySetOptions
from starlette_betterauth.testing import Issuer, JWKSServer

#: Repeated-token target: at most this many µs over the bare app.
TARGET_REPEATED_US = 2.0
#: First-seen target: at most this many µs beyond the bare app and the signature.
TARGET_BEYOND_US = 12.0
#: First-seen EdDSA target with libsodium: req/s over the lean PyJWT middleware.
TARGET_EDDSA_VS_PYJWT = 1.8

_HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
]


async def hello(request: Request) -> PlainTextResponse:
    """The endpoint under test."""
    return PlainTextResponse("hello")


def make_app() -> Starlette:
    """The bare app: one route, one short text answer."""
    return Starlette(routes=[Route("/hello", hello)])


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"the app answered {message['status']}")


def _scope(token: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "root_path": "",
        "query_string": b"",
        "headers": [*_HEADERS, (b"authorization", f"Bearer {token}".encode("ascii"))],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def requests(
    app: ASGIApp, tokens: list[str], batch: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    """A coroutine factory: ``batch`` requests through ``app``, µs per request."""
    return scoped_requests(app, [_scope(token) for token in tokens], batch)


def scoped_requests(
    app: ASGIApp, scopes_given: list[Scope], batch: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    """A coroutine factory: ``batch`` requests through ``app`` cycling ``scopes_given``."""
    scopes = itertools.cycle(scopes_given)

    async def run() -> float:
        start = time.perf_counter_ns()
        for _ in range(batch):
            # A fresh scope per request, as a server makes one (the middleware writes to it).
            await app(dict(next(scopes)), _receive, _send)
        return (time.perf_counter_ns() - start) / batch / 1000

    return run


#: Written between the requests of the cold-cache rows: more than a CPU core's L1 and L2 hold.
_EVICTION = bytearray(8 * 1024 * 1024)
_LINES = b"\x01" * (len(_EVICTION) // 64)


def cold_requests(
    app: ASGIApp, tokens: list[str], batch: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    """Like :func:`requests`, with the CPU caches filled with other data before each request.

    One byte per 64-byte cache line of an 8 MiB buffer is written, then the
    request alone is timed.
    """
    scopes = itertools.cycle([_scope(token) for token in tokens])
    clock = time.perf_counter_ns

    async def run() -> float:
        spent = 0
        for _ in range(batch):
            scope = dict(next(scopes))
            _EVICTION[::64] = _LINES
            start = clock()
            await app(scope, _receive, _send)
            spent += clock() - start
        return spent / batch / 1000

    return run


def on_loop(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], Coroutine[Any, Any, float]]
) -> Callable[[int], float]:
    """A candidate for :func:`interleaved` that runs ``factory()`` on ``loop``."""
    return lambda _round: loop.run_until_complete(factory())


def middleware(
    app: ASGIApp, server: JWKSServer, cache_size: int, *, libsodium: bool = True
) -> BetterAuthMiddleware:
    """The package's middleware as a user would add it, around ``app``."""
    return BetterAuthMiddleware(
        app,
        base_url=server.url,
        token_cache_size=cache_size,
        key_set=KeySetOptions(ttl=3600.0, min_ttl=3600.0, libsodium=libsodium),
    )


def libsodium_floor(public_jwk: dict[str, Any], token: str) -> Callable[[], object] | None:
    """libsodium's bare Ed25519 check of ``token`` (None without PyNaCl)."""
    try:
        from nacl.bindings import crypto_sign_open
    except ImportError:
        return None
    from micro import _b64decode

    header, payload, signature_b64 = token.split(".")
    signed = _b64decode(signature_b64) + f"{header}.{payload}".encode("ascii")
    public = _b64decode(public_jwk["x"])
    return lambda: crypto_sign_open(signed, public)


class SignatureAndPayload:
    """The least a JWT middleware does: check the signature, decode the payload.

    No header parsing beyond finding Authorization, no claim checks, no user, no
    cache; each token's signature check (``checks``) and its payload in standard
    base64 are prepared in advance, found by the header's value.
    """

    def __init__(self, app: ASGIApp, prepared: dict[bytes, tuple[Callable[[], object], bytes]]):
        self.app = app
        self.prepared = prepared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                check, payload = self.prepared[value]
                check()
                json.loads(binascii.a2b_base64(payload))
        await self.app(scope, receive, send)


def prepared_floor(
    tokens: list[str], checks: list[Callable[[], object]]
) -> dict[bytes, tuple[Callable[[], object], bytes]]:
    """For :class:`SignatureAndPayload`: each token's check and standard-base64 payload."""
    prepared = {}
    for token, check in zip(tokens, checks, strict=True):
        payload = token.split(".")[1]
        standard = payload.replace("-", "+").replace("_", "/") + "=" * (-len(payload) % 4)
        prepared[f"Bearer {token}".encode("ascii")] = (check, standard.encode("ascii"))
    return prepared


def pyjwt_middleware(app: ASGIApp, server: JWKSServer, alg: str) -> ASGIApp:
    """The lean PyJWT middleware of ``bench/apps/pyjwt_asgi.py`` around ``app``."""
    os.environ.setdefault("BENCH_BASE_URL", server.url)
    module = importlib.import_module("apps.pyjwt_asgi")
    built: ASGIApp = module.PyJWTMiddleware(app, base_url=server.url, algorithms=[alg])
    return built


def beyond_signature(samples: dict[str, list[float]], case: str) -> float:
    """Median over rounds of ``case`` less the bare app and the signature alone."""
    return statistics.median(
        with_case - bare - floor
        for with_case, bare, floor in zip(
            samples[case], samples["bare"], samples["floor"], strict=True
        )
    )


def main(argv: list[str] | None = None) -> None:
    """Run the in-process benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated")
    parser.add_argument(
        "--no-libsodium", action="store_true", help="EdDSA through cryptography, not libsodium"
    )
    args = parser.parse_args(argv)
    libsodium = not args.no_libsodium
    rounds = args.rounds or (3 if args.quick else 21)
    pool = 8 if args.quick else 400
    fast_batch = 200 if args.quick else 5000
    cold_batch = 20 if args.quick else 300
    slow_ms = 2.0 if args.quick else 25.0
    app = make_app()
    loop = asyncio.new_event_loop()
    try:
        with JWKSServer(Issuer()) as server:
            issuer = server.issuer
            # Repeated token: the default cache, one token.
            repeated = middleware(app, server, 10_000)
            token = issuer.token(role="user")
            loop.run_until_complete(requests(repeated, [token], 1)())  # verify, then cached
            samples = interleaved(
                {
                    "bare": on_loop(loop, requests(app, [token], fast_batch)),
                    "repeated": on_loop(loop, requests(repeated, [token], fast_batch)),
                    "bare cold": on_loop(loop, cold_requests(app, [token], cold_batch)),
                    "repeated cold": on_loop(loop, cold_requests(repeated, [token], cold_batch)),
                },
                rounds,
            )
            bare = median(samples["bare"])
            over = paired_median(samples["repeated"], samples["bare"], ratio=False)
            cold, cold_bare = samples["repeated cold"], samples["bare cold"]
            repeated_rows = [
                [
                    "repeated token (cache hit)",
                    f"{bare:.1f}",
                    f"{median(samples['repeated']):.1f}",
                    f"{over:+.1f}",
                    f"{paired_median(samples['bare'], samples['repeated'], ratio=True):.2f}x",
                    f"at most +{TARGET_REPEATED_US:.0f} µs: {verdict(over <= TARGET_REPEATED_US)}",
                ],
                [
                    "repeated token, cold caches",
                    f"{median(cold_bare):.1f}",
                    f"{median(cold):.1f}",
                    f"{paired_median(cold, cold_bare, ratio=False):+.1f}",
                    f"{paired_median(cold_bare, cold, ratio=True):.2f}x",
                    "no target (what a busy server sees)",
                ],
            ]
            first_rows = []
            for alg in args.algorithms.split(","):
                key = issuer.rotate(alg)
                tokens = [issuer.token(key=key, role="user") for _ in range(pool)]
                # Half the pool fits: cycling through it, every request misses and evicts.
                first_seen = middleware(app, server, pool // 2, libsodium=libsodium)
                loop.run_until_complete(requests(first_seen, tokens[:1], 1)())  # load the keys
                pyjwt = pyjwt_middleware(app, server, alg)
                loop.run_until_complete(requests(pyjwt, tokens[:1], 1)())  # load the keys
                public_key = PyJWK(key.public_jwk, alg).key
                floors: list[Callable[[], object]] = [
                    floor_verifier(alg, public_key, token) for token in tokens
                ]
                floor_name = "cryptography"
                if alg == "EdDSA" and libsodium:
                    fast = [libsodium_floor(key.public_jwk, token) for token in tokens]
                    if all(f is not None for f in fast):
                        floors = [f for f in fast if f is not None]
                        floor_name = "libsodium"
                floor = cycling(floors)
                least = SignatureAndPayload(app, prepared_floor(tokens, floors))
                with quiet_gc():
                    start = time.perf_counter()
                    for _ in range(20):
                        floor()
                    estimate = (time.perf_counter() - start) / 20 * 1e6
                batch = max(5, int(slow_ms * 1000 / estimate))
                samples = interleaved(
                    {
                        "bare": on_loop(loop, requests(app, tokens, batch)),
                        "first": on_loop(loop, requests(first_seen, tokens, batch)),
                        "floor": timed_loop(floor, batch),
                        "least": on_loop(loop, requests(least, tokens, batch)),
                        "pyjwt": on_loop(loop, requests(pyjwt, tokens, batch)),
                    },
                    rounds,
                )
                added = paired_median(samples["first"], samples["bare"], ratio=False)
                signature = median(samples["floor"])
                beyond = beyond_signature(samples, "first")
                least_beyond = beyond_signature(samples, "least")
                versus = paired_median(samples["pyjwt"], samples["first"], ratio=True)
                goal = f"at most +{TARGET_BEYOND_US:.0f} µs: {verdict(beyond <= TARGET_BEYOND_US)}"
                if alg == "EdDSA" and floor_name == "libsodium":
                    goal += (
                        f"; at least {TARGET_EDDSA_VS_PYJWT}x PyJWT: "
                        f"{verdict(versus >= TARGET_EDDSA_VS_PYJWT)}"
                    )
                first_rows.append(
                    [
                        alg,
                        f"{median(samples['bare']):.1f}",
                        f"{median(samples['first']):.1f}",
                        f"{added:+.1f}",
                        f"{signature:.1f} ({floor_name})",
                        f"{beyond:+.1f}",
                        f"{least_beyond:+.1f}",
                        f"{median(samples['pyjwt']):.1f}",
                        f"{versus:.2f}x",
                        goal,
                    ]
                )
    finally:
        loop.close()
    print(f"## asgi: µs per request in process ({'quick' if args.quick else 'full'} run)\n")
    print(f"Machine: {machine(('pynacl',))}\n")
    print(f"{rounds} interleaved rounds; medians, differences and ratios over same-round pairs.\n")
    print(
        table(
            ["case", "bare app µs", "with middleware µs", "added", "bare / with", "target"],
            repeated_rows,
        )
    )
    print()
    print(
        table(
            [
                "first-seen tokens",
                "bare app µs",
                "with middleware µs",
                "added",
                "signature alone µs",
                "added beyond the signature",
                "floor: signature + payload decode only, beyond the signature",
                "PyJWT middleware µs",
                "req/s vs PyJWT middleware",
                "targets",
            ],
            first_rows,
        )
    )


if __name__ == "__main__":
    main()

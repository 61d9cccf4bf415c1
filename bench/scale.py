"""How the middleware's cost grows with the work: key sets, public rules, token caches.

In process, one small Starlette app behind ``BetterAuthMiddleware`` called
directly (no server), each comparison interleaved round by round in one run:

- key sets of 1, 100 and 1,000 Ed25519 keys: the key set's parse time, and a
  first-seen token signed by the last key read; a key set is read up to its
  first 100 keys (``MAX_KEYS``), so in the 1,000-key set a token of key #1,000
  is refused (401, unknown kid), and that refusal is timed too;
- 1 and 100 public rules: a request without a token to the last public route,
  and to a route that is not public (401), and a repeated token;
- token caches of 1,000 and 100,000 entries, full: a repeated token (cache hit)
  and a first-seen one (a miss that evicts), and the memory each cached token
  holds (tracemalloc, over the whole fill through the middleware).

Run: ``python bench/scale.py`` (``--quick`` for a smoke run on tiny sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from benchkit import interleaved, machine, median, table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

from starlette_betterauth import BetterAuthMiddleware, KeySetOptions
from starlette_betterauth.testing import Issuer, JWKSServer

#: Memory target per cached token, in bytes.
TARGET_BYTES_PER_TOKEN = 1024


async def hello(request: Request) -> PlainTextResponse:
    """The endpoint under test."""
    return PlainTextResponse("hello")


def make_app() -> Starlette:
    """The bare app."""
    return Starlette(routes=[Route("/hello", hello), Route("/public/{n}", hello)])


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(path: str, token: str | None) -> Scope:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode("ascii")))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def requests(
    app: ASGIApp, scopes: list[Scope], batch: int, expect: int = 200
) -> Callable[[], Coroutine[Any, Any, float]]:
    """A coroutine factory: ``batch`` requests through ``app``, µs per request."""
    cycle = itertools.cycle(scopes)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != expect:
            raise RuntimeError(f"the app answered {message['status']}, not {expect}")

    async def run() -> float:
        start = time.perf_counter_ns()
        for _ in range(batch):
            await app(dict(next(cycle)), _receive, send)
        return (time.perf_counter_ns() - start) / batch / 1000

    return run


def middleware(app: ASGIApp, url: str, **options: Any) -> BetterAuthMiddleware:
    """The package's middleware around ``app``, keys kept for the whole run."""
    return BetterAuthMiddleware(
        app, base_url=url, key_set=KeySetOptions(ttl=3600.0, min_ttl=3600.0), **options
    )


def main(argv: list[str] | None = None) -> None:
    """Run the scaling benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run, tiny sizes")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 15
    fast = 200 if args.quick else 3000
    slow = 10 if args.quick else 200
    key_counts = (1, 10, 120) if args.quick else (1, 100, 1000)
    rule_counts = (1, 100)
    cache_sizes = (100, 1000) if args.quick else (1000, 100_000)
    app = make_app()
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete

    def candidate(factory: Callable[[], Coroutine[Any, Any, float]]) -> Callable[[int], float]:
        return lambda _round: run(factory())

    key_rows: list[list[object]] = []
    rule_rows: list[list[object]] = []
    cache_rows: list[list[object]] = []
    opened: list[tuple[BetterAuthMiddleware, JWKSServer]] = []
    key_facts: dict[int, tuple[int, float, bool]] = {}
    try:
        # -- key sets ---------------------------------------------------------------
        key_candidates: dict[str, Callable[[int], float]] = {}
        for count in key_counts:
            issuer = Issuer(alg="EdDSA")
            for _ in range(count - 1):
                issuer.rotate("EdDSA")
            # The last key read: key #100 of a set capped at 100 keys.
            readable = issuer.keys[min(count, 100) - 1]
            server = JWKSServer(issuer).__enter__()
            mw = middleware(app, server.url, token_cache_size=slow // 2)
            started = time.perf_counter()
            run(mw.verifier.jwks.refresh())
            parse_ms = (time.perf_counter() - started) * 1000
            status = mw.verifier.jwks.status()
            tokens = [issuer.token(key=readable, role="user") for _ in range(slow)]
            key_candidates[f"first {count}"] = candidate(
                requests(mw, [_scope("/hello", t) for t in tokens], slow)
            )
            opened.append((mw, server))
            if count > 100:
                outside = [issuer.token(key=issuer.keys[-1]) for _ in range(slow)]
                factory = requests(mw, [_scope("/hello", t) for t in outside], slow, expect=401)
                run(factory())  # the refetch for the unknown kid happens once, here
                key_candidates[f"outside {count}"] = candidate(factory)
            key_facts[count] = (len(status.kids), parse_ms, count > 100)
        samples = interleaved(key_candidates, rounds)
        for mw, server in opened:
            run(mw.aclose())
            server.__exit__(None, None, None)
        for count, (read, parse_ms, capped) in key_facts.items():
            refused = (
                f"401 (unknown kid): {median(samples[f'outside {count}']):.1f} µs"
                if capped
                else "-"
            )
            first = f"{median(samples[f'first {count}']):.1f}"
            key_rows.append([count, read, f"{parse_ms:.1f}", first, refused])

        # -- public rules and token caches share one key set -------------------------
        issuer = Issuer(alg="EdDSA")
        with JWKSServer(issuer) as server:
            token = issuer.token(role="user")
            rule_candidates: dict[str, Callable[[int], float]] = {}
            for count in rule_counts:
                rules = [f"GET /public/{n}" for n in range(count)]
                mw = middleware(app, server.url, public=rules)
                run(requests(mw, [_scope("/hello", token)], 1)())
                last = f"/public/{count - 1}"
                rule_candidates[f"public {count}"] = candidate(
                    requests(mw, [_scope(last, None)], fast)
                )
                rule_candidates[f"refused {count}"] = candidate(
                    requests(mw, [_scope("/hello", None)], fast, expect=401)
                )
                rule_candidates[f"token {count}"] = candidate(
                    requests(mw, [_scope("/hello", token)], fast)
                )
            samples = interleaved(rule_candidates, rounds)
            for count in rule_counts:
                rule_rows.append(
                    [
                        count,
                        f"{median(samples[f'public {count}']):.1f}",
                        f"{median(samples[f'refused {count}']):.1f}",
                        f"{median(samples[f'token {count}']):.1f}",
                    ]
                )

            cache_candidates: dict[str, Callable[[int], float]] = {}
            memory: dict[int, float] = {}
            for size in cache_sizes:
                mw = middleware(app, server.url, token_cache_size=size)
                run(requests(mw, [_scope("/hello", token)], 1)())
                mw.cache.clear()
                fill = [
                    _scope("/hello", issuer.token(role="user", email=f"user{n}@example.com"))
                    for n in range(size)
                ]
                gc.collect()
                tracemalloc.start()
                before = tracemalloc.get_traced_memory()[0]
                run(requests(mw, fill, size)())
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                assert len(mw.cache) == size
                memory[size] = (after - before) / size
                hot = fill[-1]
                # One new token per request of every round: each one misses and evicts.
                fresh = [_scope("/hello", issuer.token(role="user")) for _ in range(slow * rounds)]
                cache_candidates[f"hit {size}"] = candidate(requests(mw, [hot], fast))
                cache_candidates[f"miss {size}"] = candidate(requests(mw, fresh, slow))
                del fill
            samples = interleaved(cache_candidates, rounds)
            for size in cache_sizes:
                per_token = memory[size]
                cache_rows.append(
                    [
                        f"{size:,}",
                        f"{median(samples[f'hit {size}']):.1f}",
                        f"{median(samples[f'miss {size}']):.1f}",
                        f"{per_token:,.0f} B",
                        "met" if per_token <= TARGET_BYTES_PER_TOKEN else "**missed**",
                    ]
                )
    finally:
        loop.close()
    print(f"## scale: µs per request in process ({'quick' if args.quick else 'full'} run)\n")
    print(f"Machine: {machine(('pynacl',))}\n")
    print(f"{rounds} interleaved rounds per table; medians.\n")
    print(
        table(
            [
                "keys in the set",
                "keys read",
                "key set fetch and parse ms",
                "first-seen EdDSA µs",
                "token of the last key listed",
            ],
            key_rows,
        )
    )
    print()
    print(
        table(
            [
                "public rules",
                "no token, last public route µs",
                "no token, not public (401) µs",
                "repeated token µs",
            ],
            rule_rows,
        )
    )
    print()
    print(
        table(
            [
                "token cache (full)",
                "repeated token µs",
                "first-seen, evicting µs",
                "memory per cached token",
                f"target {TARGET_BYTES_PER_TOKEN} B",
            ],
            cache_rows,
        )
    )


if __name__ == "__main__":
    main()

"""In-process benchmark of each credential kind next to BearerJWT, in one run.

One small Starlette app is called directly (no server in front), wrapped in
``BetterAuthMiddleware`` with ``accept=[SessionCookie(), SessionToken(), BearerJWT()]``,
interleaved round by round with the bare app:

- first-seen: a JWT, and a JWKS-signed ``session_data`` cookie, that the
  middleware has not verified before (pools larger than the cache, cycled);
- repeated: the same JWT, the same cookie, and the same session token (a
  get-session answer from the cache);
- get-session miss: a session token the middleware has not seen, answered by the
  testing kit's loopback get-session (calls counted).

Targets (issue 17): a locally verified cookie costs what a JWT costs (within
10%); a get-session cache hit adds at most 5 µs over a repeated JWT.

Run: ``python bench/kinds.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from asgi import hello, scoped_requests
from benchkit import interleaved, machine, median, paired_median, table, verdict
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from starlette_betterauth import BetterAuthMiddleware, KeySetOptions
from starlette_betterauth.credentials import BearerJWT, SessionCookie, SessionToken
from starlette_betterauth.testing import Issuer, JWKSServer

#: A locally verified cookie may cost this much more than a JWT, as a ratio.
TARGET_COOKIE_RATIO = 1.10
#: A get-session cache hit may add this many µs over a repeated JWT.
TARGET_SESSION_HIT_US = 5.0


def _scope(header: tuple[bytes, bytes] | None) -> Scope:
    """A GET /hello scope with ``header`` added."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")]
    if header is not None:
        headers.append(header)
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
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def bearer(token: str) -> tuple[bytes, bytes]:
    """An Authorization header."""
    return (b"authorization", f"Bearer {token}".encode("ascii"))


def cookie(cookies: dict[str, str]) -> tuple[bytes, bytes]:
    """A Cookie header."""
    return (b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode("ascii"))


def requests(
    app: ASGIApp, headers: list[tuple[bytes, bytes] | None], batch: int
) -> Callable[[], Coroutine[Any, Any, float]]:
    """A coroutine factory: ``batch`` requests through ``app``, µs per request."""
    return scoped_requests(app, [_scope(header) for header in headers], batch)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 21
    pool = 8 if args.quick else 400
    fast = 200 if args.quick else 5000
    slow = 20 if args.quick else 300
    misses = 5 if args.quick else 200
    bare = Starlette(routes=[Route("/hello", hello)])
    loop = asyncio.new_event_loop()
    try:
        with JWKSServer(Issuer()) as server:
            issuer = server.issuer
            app = BetterAuthMiddleware(
                bare,
                base_url=server.url,
                accept=[SessionCookie(), SessionToken(), BearerJWT()],
                token_cache_size=pool // 2,  # cycling the pool, every first-seen request misses
                key_set=KeySetOptions(ttl=3600.0, min_ttl=3600.0),
            )
            sessions = [issuer.session(email=f"u{i}@example.com") for i in range(pool)]
            jwts: list[tuple[bytes, bytes] | None] = [
                bearer(issuer.token(role="user")) for _ in range(pool)
            ]
            cookies: list[tuple[bytes, bytes] | None] = [
                cookie(issuer.session_data_cookie(s)) for s in sessions
            ]
            one_jwt, one_cookie = jwts[:1], cookies[:1]
            one_session: list[tuple[bytes, bytes] | None] = [bearer(sessions[0].token)]
            for warm in (one_jwt, one_cookie, one_session):
                loop.run_until_complete(requests(app, warm, 1)())

            def run(
                headers: list[tuple[bytes, bytes] | None], batch: int
            ) -> Callable[[int], float]:
                factory = requests(app, headers, batch)
                return lambda _round: loop.run_until_complete(factory())

            def run_bare(batch: int) -> Callable[[int], float]:
                factory = requests(bare, [None], batch)
                return lambda _round: loop.run_until_complete(factory())

            samples = interleaved(
                {
                    "bare": run_bare(fast),
                    "jwt first": run(jwts, slow),
                    "cookie first": run(cookies, slow),
                    "jwt repeated": run(one_jwt, fast),
                    "cookie repeated": run(one_cookie, fast),
                    "session hit": run(one_session, fast),
                },
                rounds,
            )
            before = server.session_requests
            fresh: list[tuple[bytes, bytes] | None] = [
                bearer(issuer.session().token) for _ in range(misses)
            ]
            started = time.perf_counter()
            loop.run_until_complete(requests(app, fresh, misses)())
            miss_us = (time.perf_counter() - started) / misses * 1e6
            miss_calls = server.session_requests - before
            loop.run_until_complete(app.aclose())
    finally:
        loop.close()
    base = median(samples["bare"])

    def row(name: str, case: str, compare: str | None, target: str) -> list[str]:
        ratio = (
            f"{paired_median(samples[case], samples[compare], ratio=True):.2f}x" if compare else "-"
        )
        added = paired_median(samples[case], samples["bare"], ratio=False)
        return [name, f"{median(samples[case]):.1f}", f"{added:+.1f}", ratio, target]

    cookie_ratio = paired_median(samples["cookie first"], samples["jwt first"], ratio=True)
    hit_over = paired_median(samples["session hit"], samples["jwt repeated"], ratio=False)
    rows = [
        row("BearerJWT, first-seen", "jwt first", None, ""),
        row(
            "SessionCookie, first-seen session_data",
            "cookie first",
            "jwt first",
            f"within {TARGET_COOKIE_RATIO:.2f}x of the JWT: "
            f"{verdict(cookie_ratio <= TARGET_COOKIE_RATIO)}",
        ),
        row("BearerJWT, repeated", "jwt repeated", None, ""),
        row("SessionCookie, repeated", "cookie repeated", "jwt repeated", ""),
        row(
            "SessionToken, get-session cache hit",
            "session hit",
            "jwt repeated",
            f"at most +{TARGET_SESSION_HIT_US:.0f} µs over a repeated JWT ({hit_over:+.1f}): "
            f"{verdict(hit_over <= TARGET_SESSION_HIT_US)}",
        ),
    ]
    print(f"## kinds: µs per request in process ({'quick' if args.quick else 'full'} run)\n")
    print(f"Machine: {machine()}\n")
    print(f"{rounds} interleaved rounds; bare app {base:.1f} µs per request.\n")
    print(table(["case", "µs", "added over bare", "ratio to the JWT case", "target"], rows))
    print()
    print(
        f"get-session miss: {miss_us:.0f} µs per request over loopback, "
        f"{miss_calls} calls for {misses} new session tokens"
    )


if __name__ == "__main__":
    main()

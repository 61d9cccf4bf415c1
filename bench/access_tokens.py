"""µs per request for the OAuth kinds (access tokens, introspection, DPoP), in process.

One Starlette endpoint is called directly through ``BetterAuthMiddleware`` (no
server, no sockets) with tokens minted by the testing kit and keys served by its
loopback JWKS server. Each round times a few thousand requests per case in CPU
time of the event loop's thread (waiting for a core on a shared machine is not a
request's cost); the table gives the median and the best round, and the best
round minus the bare app's.

Run: ``python bench/access_tokens.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

from starlette_betterauth import BetterAuthMiddleware
from starlette_betterauth.credentials import AccessToken, BearerJWT, Credential, Introspection
from starlette_betterauth.testing import DPoPKey, Issuer, JWKSServer

API = "http://127.0.0.1:8000"


async def hello(request: Request) -> PlainTextResponse:
    """The endpoint under test."""
    return PlainTextResponse("hello")


def scope_for(headers: Sequence[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }


async def per_request(
    app: ASGIApp, headers_for: Callable[[int], Sequence[tuple[bytes, bytes]]], count: int
) -> float:
    """µs per request over ``count`` requests (headers built beforehand)."""
    scopes = [scope_for(headers_for(i)) for i in range(count)]

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    # CPU time of this thread: the machine may be shared, and waiting for a core is not
    # what a request costs.
    started = time.thread_time()
    for scope in scopes:
        await app(scope, receive, send)
    elapsed = time.thread_time() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / count * 1e6


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def dpop_headers(
    token: str, proofs: Sequence[str]
) -> Callable[[int], Sequence[tuple[bytes, bytes]]]:
    """Request ``i`` carries ``token`` as DPoP with the ``i``-th proof."""
    authorization = (b"authorization", f"DPoP {token}".encode())
    return lambda i: [authorization, (b"dpop", proofs[i].encode())]


async def main(quick: bool) -> None:
    rounds, count = (3, 200) if quick else (7, 3000)
    issuer = Issuer()
    with JWKSServer(issuer) as server:
        client_id, secret = issuer.register_client()
        starlette = Starlette(routes=[Route("/hello", hello)])

        def middleware(accept: list[Credential]) -> BetterAuthMiddleware:
            return BetterAuthMiddleware(
                starlette, base_url=server.url, accept=accept, token_cache_size=200_000
            )

        session_jwt = issuer.token()
        access = issuer.access_token(scope="read", audience=API)
        key = DPoPKey()
        bound = issuer.access_token(scope="read", audience=API, dpop_key=key)
        opaque = issuer.opaque_access_token(scope="read", user_id="u1")
        fresh = [issuer.access_token(scope="read", audience=API) for _ in range(count)]
        both = middleware([BearerJWT(), AccessToken(resource=API)])
        only = middleware([AccessToken(resource=API)])
        introspecting = middleware(
            [
                AccessToken(
                    resource=API,
                    introspection=Introspection(client_id=client_id, client_secret=secret),
                )
            ]
        )
        cases: list[tuple[str, ASGIApp, Callable[[int], Sequence[tuple[bytes, bytes]]]]] = [
            ("bare app (no middleware)", starlette, lambda i: []),
            (
                "BearerJWT, repeated session JWT",
                middleware([BearerJWT()]),
                lambda i: bearer(session_jwt),
            ),
            ("AccessToken, repeated JWT access token", only, lambda i: bearer(access)),
            ("BearerJWT + AccessToken: session JWT", both, lambda i: bearer(session_jwt)),
            ("BearerJWT + AccessToken: access token", both, lambda i: bearer(access)),
            (
                "AccessToken, opaque token (introspected, cached)",
                introspecting,
                lambda i: bearer(opaque),
            ),
        ]
        results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        results["AccessToken, first-seen JWT (EdDSA verify)"] = []
        results["AccessToken, DPoP: cached token + fresh proof (ES256)"] = []
        for _ in range(rounds):
            for name, app, headers_for in cases:
                await per_request(app, headers_for, 20)  # warm the caches
                results[name].append(await per_request(app, headers_for, count))
            fresh_only = middleware([AccessToken(resource=API)])
            await per_request(fresh_only, lambda i: bearer(access), 5)  # the key set
            results["AccessToken, first-seen JWT (EdDSA verify)"].append(
                await per_request(fresh_only, lambda i: bearer(fresh[i]), count)
            )
            await fresh_only.aclose()
            proofs = [key.proof("GET", f"{API}/hello", token=bound) for _ in range(count + 20)]
            dpop = middleware([AccessToken(resource=API)])
            await per_request(dpop, dpop_headers(bound, proofs[count:]), 20)
            results["AccessToken, DPoP: cached token + fresh proof (ES256)"].append(
                await per_request(dpop, dpop_headers(bound, proofs), count)
            )
            await dpop.aclose()
        for app in (both, only, introspecting):
            await app.aclose()
    run = "quick run" if quick else f"{rounds} rounds of {count}"
    print(f"## kinds: µs per request in process ({run})")
    print()
    bare = min(results["bare app (no middleware)"])
    print("| case | median µs | min µs | min over the bare app µs |")
    print("|---|---:|---:|---:|")
    for name, values in results.items():
        low = min(values)
        print(f"| {name} | {statistics.median(values):.1f} | {low:.1f} | {low - bare:+.1f} |")
    print()
    print(f"introspection calls made: {server.introspection_requests}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    asyncio.run(main(parser.parse_args().quick))

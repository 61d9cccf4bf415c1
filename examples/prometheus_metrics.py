"""Prometheus metrics and a readiness endpoint for an API protected by starlette-betterauth.

The package depends on no metrics library: the middleware and the key-set cache
call one ``on_event(name, data)`` hook (events and their data are listed in
``starlette_betterauth.middleware``), and :class:`AuthMetrics` below turns those
calls into ``prometheus_client`` counters. ``/ready`` reports whether usable keys
are loaded, for a load balancer or Kubernetes readiness probe.

Run it against a Better Auth server, or the package's local stand-in::

    python -m starlette_betterauth dev-issuer            # prints a base URL and tokens
    BETTER_AUTH_URL=http://127.0.0.1:PORT \\
        uvicorn --factory prometheus_metrics:create_app --app-dir examples
    curl -H "Authorization: Bearer $USER_TOKEN" http://127.0.0.1:8000/me
    curl http://127.0.0.1:8000/metrics

With several worker processes, use prometheus_client's multiprocess mode (each
worker also has its own key-set cache and fetches the key set itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from starlette_betterauth import BetterAuthMiddleware, TokenVerifier

OUTCOMES = ("accepted", "anonymous", "refused")


class AuthMetrics:
    """Prometheus metrics fed by starlette-betterauth's ``on_event`` hook.

    Labels stay bounded: the outcome, the error class name and the HTTP status;
    never the path or anything from the token.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "betterauth_requests",
            "Requests and websocket handshakes seen by the middleware, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.refusals = Counter(
            "betterauth_refusals",
            "Refused requests, by reason (error class) and HTTP status.",
            ["reason", "status"],
            registry=registry,
        )
        self.token_cache_hits = Counter(
            "betterauth_token_cache_hits",
            "Accepted requests whose token was already verified (no signature check).",
            registry=registry,
        )
        self.jwks_fetches = Counter(
            "betterauth_jwks_fetches",
            "Key-set fetches, by result.",
            ["result"],
            registry=registry,
        )
        self.jwks_keys = Gauge(
            "betterauth_jwks_keys",
            "Usable keys in the last key set fetched.",
            registry=registry,
        )
        self.jwks_fetch_seconds = Histogram(
            "betterauth_jwks_fetch_seconds",
            "Time taken by key-set fetches, good or bad.",
            registry=registry,
        )
        for outcome in OUTCOMES:  # show zeros before the first request
            self.requests.labels(outcome=outcome)
        for result in ("ok", "error"):
            self.jwks_fetches.labels(result=result)

    def observe(self, name: str, data: Mapping[str, Any]) -> None:
        """The ``on_event`` hook: one call per event, cheap and synchronous."""
        if name in OUTCOMES:
            self.requests.labels(outcome=name).inc()
            if name == "accepted" and data["cached"]:
                self.token_cache_hits.inc()
            elif name == "refused":
                self.refusals.labels(reason=data["reason"], status=str(data["status"])).inc()
        elif name == "jwks_refresh":
            self.jwks_fetches.labels(result="ok").inc()
            self.jwks_keys.set(data["keys"])
            self.jwks_fetch_seconds.observe(data["duration"])
        elif name == "jwks_failure":
            self.jwks_fetches.labels(result="error").inc()
            self.jwks_fetch_seconds.observe(data["duration"])


def create_app(
    base_url: str | None = None, *, registry: CollectorRegistry | None = None
) -> Starlette:
    """The API: ``/me`` needs a token; ``/metrics`` and ``/ready`` are public.

    ``base_url`` defaults to ``BETTER_AUTH_URL``; ``registry`` to a fresh one.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = AuthMetrics(registry)
    # The verifier is built here, not by the middleware, so /ready can reach its
    # key-set cache; the hook goes to the cache too, for the jwks_* events.
    verifier = TokenVerifier.for_server(base_url, on_event=metrics.observe)

    async def me(request: Request) -> JSONResponse:
        user = request.state.user
        return JSONResponse({"id": user.id, "email": user.email, "roles": sorted(user.roles)})

    async def ready(request: Request) -> JSONResponse:
        # probe() fetches the key set when none is loaded yet (at most once per
        # retry interval), so an idle instance becomes ready without traffic.
        status = await verifier.jwks.probe()
        body = {
            "ready": status.ready,
            "keys": len(status.kids),
            "age": status.age,
            "last_error": status.last_error,
        }
        return JSONResponse(body, status_code=200 if status.ready else 503)

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/me", me), Route("/ready", ready), Route("/metrics", scrape)],
        middleware=[
            Middleware(
                BetterAuthMiddleware,
                verifier=verifier,
                on_event=metrics.observe,
                public=["GET /ready", "GET /metrics"],
                warm_on_startup=True,
            )
        ],
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)

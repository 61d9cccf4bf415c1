"""Events for metrics, readiness, and the Prometheus example, with real tokens and key servers."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from _helpers import asgi_client, bearer, guarded_app, ok
from _serving import websocket_session
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from starlette_betterauth import JWKSCache, KeySetOptions
from starlette_betterauth.testing import Issuer, JWKSServer, SigningKey

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "prometheus_metrics.py"
OUTCOMES = {"accepted", "anonymous", "refused"}


@cache
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prometheus_metrics_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder:
    """An on_event hook that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: Mapping[str, Any]) -> None:
        self.events.append((name, dict(data)))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def outcomes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(n, d) for n, d in self.events if n in OUTCOMES]


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


def make_app(**options: Any) -> Starlette:
    routes = [Route("/me", ok), Route("/public", ok), WebSocketRoute("/ws", echo)]
    return guarded_app(routes, **options)


async def websocket_handshake(app: Starlette, token: str | None) -> str:
    """One websocket handshake through the ASGI app; the first message type sent back."""
    first: str = (await websocket_session(app, "/ws", token=token))[0]["type"]
    return first


# -- every outcome exactly once ---------------------------------------------------------


async def test_every_request_emits_exactly_one_outcome(server: JWKSServer, issuer: Issuer) -> None:
    recorder = Recorder()
    app = make_app(base_url=server.url, on_event=recorder, public=["/public"])
    token = issuer.token()
    cases: list[tuple[str, dict[str, str], int, str, dict[str, Any]]] = [
        ("/me", bearer(token), 200, "accepted", {"path": "/me", "cached": False}),
        ("/me", bearer(token), 200, "accepted", {"path": "/me", "cached": True}),
        ("/public", {}, 200, "anonymous", {"path": "/public"}),
        ("/public", bearer(token), 200, "accepted", {"path": "/public", "cached": True}),
        ("/me", {}, 401, "refused", {"path": "/me", "reason": "MissingTokenError", "status": 401}),
        (
            "/me",
            {"authorization": "Basic dTpw"},
            401,
            "refused",
            {"path": "/me", "reason": "InvalidRequestError", "status": 401},
        ),
        (
            "/me",
            bearer(issuer.expired_token()),
            401,
            "refused",
            {"path": "/me", "reason": "ExpiredTokenError", "status": 401},
        ),
        (
            "/public",
            bearer("not-a-jwt"),
            401,
            "refused",
            {"path": "/public", "reason": "MalformedTokenError", "status": 401},
        ),
        (
            "/me",
            bearer(issuer.token(banned=True)),
            403,
            "refused",
            {"path": "/me", "reason": "BannedUserError", "status": 403},
        ),
    ]
    async with asgi_client(app) as client:
        for path, headers, status, name, data in cases:
            before = len(recorder.outcomes())
            response = await client.get(path, headers=headers)
            assert response.status_code == status
            assert recorder.outcomes()[before:] == [(name, data)]
    before = len(recorder.outcomes())
    assert await websocket_handshake(app, token) == "websocket.accept"
    assert await websocket_handshake(app, None) == "websocket.http.response.start"
    assert recorder.outcomes()[before:] == [
        ("accepted", {"path": "/ws", "cached": True}),
        ("refused", {"path": "/ws", "reason": "MissingTokenError", "status": 401}),
    ]
    # One key-set fetch for all of it, reported once with its outcome.
    assert [n for n in recorder.names() if n.startswith("jwks_")] == ["jwks_fetch", "jwks_refresh"]
    assert server.requests == 1


async def test_optional_mode_reports_anonymous(server: JWKSServer) -> None:
    recorder = Recorder()
    app = make_app(base_url=server.url, on_event=recorder, optional=True)
    async with asgi_client(app) as c:
        assert (await c.get("/me")).status_code == 200
    assert recorder.events == [("anonymous", {"path": "/me"})]


async def test_key_set_unavailable_is_one_refusal_per_request(issuer: Issuer) -> None:
    recorder = Recorder()
    with JWKSServer(issuer) as server:
        server.status = 500
        app = make_app(base_url=server.url, on_event=recorder)
        async with asgi_client(app) as client:
            for _ in range(3):
                assert (await client.get("/me", headers=bearer(issuer.token()))).status_code == 503
    refused = {"path": "/me", "reason": "KeySetFetchError", "status": 503}
    assert recorder.outcomes() == [("refused", refused)] * 3
    # The failed fetch is retried after retry_interval, not once per request.
    assert recorder.names().count("jwks_fetch") == 1
    assert recorder.names().count("jwks_failure") == 1


async def test_a_hook_that_raises_is_logged_and_ignored(
    server: JWKSServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str, data: Mapping[str, Any]) -> None:
        raise RuntimeError(f"metrics backend down ({name})")

    app = make_app(base_url=server.url, on_event=broken)
    async with asgi_client(app) as client:
        assert (await client.get("/me", headers=bearer(issuer.token()))).status_code == 200
        assert (await client.get("/me")).status_code == 401
    failures = [r for r in caplog.records if r.getMessage().startswith("the on_event hook raised")]
    assert [r.getMessage() for r in failures] == [
        "the on_event hook raised on 'jwks_fetch'",
        "the on_event hook raised on 'jwks_refresh'",
        "the on_event hook raised on 'accepted'",
        "the on_event hook raised on 'refused'",
    ]
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)


# -- key-set events ---------------------------------------------------------------------


async def test_each_fetch_emits_one_start_and_one_outcome(
    server: JWKSServer, issuer: Issuer
) -> None:
    recorder = Recorder()
    jwks = JWKSCache(server.jwks_url, on_event=recorder, options=KeySetOptions(retry_interval=0))
    first = issuer.current_key.kid
    try:
        await jwks.refresh()
        second = issuer.rotate().kid
        await jwks.refresh()
        issuer.remove_key(first)
        await jwks.refresh()
        server.status = 502
        await jwks.refresh()  # the previous keys keep serving: no exception
        server.status, server.body = 200, b"{}"
        await jwks.refresh()
    finally:
        await jwks.aclose()
    names = recorder.names()
    assert names == ["jwks_fetch", "jwks_refresh"] * 3 + ["jwks_fetch", "jwks_failure"] * 2
    starts = [d for n, d in recorder.events if n == "jwks_fetch"]
    assert starts == [{"url": server.jwks_url}] * 5
    refreshes = [d for n, d in recorder.events if n == "jwks_refresh"]
    assert [(d["keys"], d["gained"], d["lost"]) for d in refreshes] == [
        (1, [first], []),
        (2, [second], []),
        (1, [], [first]),
    ]
    failures = [d for n, d in recorder.events if n == "jwks_failure"]
    assert [(d["reason"], d["error"], d["stale"]) for d in failures] == [
        ("KeySetFetchError", "the key server answered HTTP 502", True),
        ("KeySetInvalidError", 'the key set is not a JSON object with a "keys" list', True),
    ]
    for name, data in recorder.events:
        expected = {
            "jwks_fetch": {"url"},
            "jwks_refresh": {"url", "keys", "gained", "lost", "replaced", "duration"},
            "jwks_failure": {"url", "error", "reason", "stale", "duration"},
        }[name]
        assert set(data) == expected
        if "duration" in data:
            assert data["duration"] >= 0
    status = jwks.status()
    assert (status.fetches, status.failures) == (5, 2)
    assert server.requests == 5


# -- readiness --------------------------------------------------------------------------


async def test_probe_loads_a_cold_cache_once(server: JWKSServer) -> None:
    jwks = JWKSCache(server.jwks_url)
    try:
        assert jwks.status().ready is False
        assert server.requests == 0
        status = await jwks.probe()
        assert status.ready is True
        assert status.kids == tuple(jwks.keys)
        for _ in range(5):
            assert (await jwks.probe()).ready is True
    finally:
        await jwks.aclose()
    assert server.requests == 1


async def test_probe_reports_a_down_key_server_without_hammering_it(issuer: Issuer) -> None:
    with JWKSServer(issuer) as server:
        server.status = 503
        jwks = JWKSCache(server.jwks_url, options=KeySetOptions(retry_interval=60))
        try:
            for _ in range(5):
                status = await jwks.probe()
                assert status.ready is False
                assert status.last_error == "the key server answered HTTP 503"
        finally:
            await jwks.aclose()
        assert server.requests == 1


async def test_status_reports_the_last_fetch_and_the_server_clock(server: JWKSServer) -> None:
    jwks = JWKSCache(server.jwks_url)
    before = time.time()
    try:
        await jwks.refresh()
    finally:
        await jwks.aclose()
    after = time.time()
    status = jwks.status()
    assert status.last_fetch_at is not None
    assert before <= status.last_fetch_at <= after
    assert status.last_fetch_duration is not None
    assert 0 <= status.last_fetch_duration <= after - before
    # Same machine, one clock: the Date header (whole seconds) is within a second or so.
    assert status.server_clock_offset is not None
    assert -(after - before) - 1 <= status.server_clock_offset <= 1


async def test_status_without_a_date_header_has_no_clock_offset() -> None:
    jwks = JWKSCache("http://keys.test/jwks", client=_no_date_client())
    try:
        await jwks.refresh()
    finally:
        await jwks.aclose()
    assert jwks.status().server_clock_offset is None
    assert jwks.status().ready is True


def _no_date_client() -> httpx.AsyncClient:
    # A response without a Date header: HTTP/1.1 servers always send one, so a mock.
    jwk = SigningKey().public_jwk
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": [jwk]}))
    return httpx.AsyncClient(transport=transport)


# -- the Prometheus example -------------------------------------------------------------


async def test_prometheus_example_counts_outcomes(server: JWKSServer, issuer: Issuer) -> None:
    registry = CollectorRegistry()
    app = example().create_app(server.url, registry=registry)

    def value(name: str, **labels: str) -> float | None:
        sample: float | None = registry.get_sample_value(name, labels)
        return sample

    assert value("betterauth_requests_total", outcome="accepted") == 0
    assert value("betterauth_jwks_fetches_total", result="ok") == 0
    token = issuer.token(user_id="u-1", role="admin")
    async with asgi_client(app) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True
        assert ready.json()["keys"] == 1
        for _ in range(3):
            response = await client.get("/me", headers=bearer(token))
            assert response.json() == {"id": "u-1", "email": "user@example.com", "roles": ["admin"]}
        assert (await client.get("/me")).status_code == 401
        assert (await client.get("/me", headers=bearer(issuer.expired_token()))).status_code == 401
        assert (
            await client.get("/me", headers=bearer(issuer.token(banned=True)))
        ).status_code == 403
        scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert 'betterauth_requests_total{outcome="accepted"} 3.0' in text
    assert 'betterauth_requests_total{outcome="refused"} 3.0' in text
    assert 'betterauth_requests_total{outcome="anonymous"} 2.0' in text  # /ready and /metrics
    assert "betterauth_token_cache_hits_total 2.0" in text
    assert 'betterauth_refusals_total{reason="MissingTokenError",status="401"} 1.0' in text
    assert 'betterauth_refusals_total{reason="ExpiredTokenError",status="401"} 1.0' in text
    assert 'betterauth_refusals_total{reason="BannedUserError",status="403"} 1.0' in text
    assert 'betterauth_jwks_fetches_total{result="ok"} 1.0' in text
    assert 'betterauth_jwks_fetches_total{result="error"} 0.0' in text
    assert "betterauth_jwks_keys 1.0" in text
    assert value("betterauth_jwks_fetch_seconds_count") == 1
    assert "path" not in text  # unbounded labels stay out
    assert server.requests == 1


async def test_prometheus_example_when_the_key_server_fails(issuer: Issuer) -> None:
    registry = CollectorRegistry()
    with JWKSServer(issuer) as server:
        server.status = 500
        app = example().create_app(server.url, registry=registry)
        async with asgi_client(app) as client:
            ready = await client.get("/ready")
            refused = await client.get("/me", headers=bearer(issuer.token()))
        assert server.requests == 1
    assert ready.status_code == 503
    assert json.loads(ready.content) == {
        "ready": False,
        "keys": 0,
        "age": None,
        "last_error": "the key server answered HTTP 500",
    }
    assert refused.status_code == 503
    assert registry.get_sample_value("betterauth_jwks_fetches_total", {"result": "error"}) == 1
    assert registry.get_sample_value("betterauth_jwks_fetches_total", {"result": "ok"}) == 0
    assert (
        registry.get_sample_value(
            "betterauth_refusals_total", {"reason": "KeySetFetchError", "status": "503"}
        )
        == 1
    )

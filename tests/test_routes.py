"""``_routes.PublicRoutes``: which requests may go without a token."""

from __future__ import annotations

import pytest

from starlette_betterauth._routes import PublicRoutes
from starlette_betterauth.errors import ConfigurationError

WEBSOCKET = None  # the method PublicRoutes.matches gets for a websocket


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/health", True),
        ("POST", "/health", True),
        (WEBSOCKET, "/health", True),
        ("GET", "/health/", False),
        ("GET", "/healthz", False),
        ("GET", "/Health", False),
        ("GET", "/", False),
    ],
)
def test_an_exact_rule_matches_that_path_only(method: str | None, path: str, public: bool) -> None:
    assert PublicRoutes(["/health"]).matches(method, path) is public


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/public/", True),
        ("/public/a", True),
        ("/public/a/b", True),
        ("/public", True),
        ("/publication", False),
    ],
)
def test_a_prefix_rule_matches_the_prefix_and_below(path: str, public: bool) -> None:
    routes = PublicRoutes(["/public/*"])
    assert routes.matches("GET", path) is public
    assert routes.matches(WEBSOCKET, path) is public


@pytest.mark.parametrize(
    ("method", "path", "public"),
    [
        ("GET", "/docs", True),
        ("HEAD", "/docs/x", True),
        ("POST", "/docs", False),
        (WEBSOCKET, "/docs", False),
    ],
)
def test_a_rule_with_methods_matches_those_http_methods(
    method: str | None, path: str, public: bool
) -> None:
    assert PublicRoutes(["GET,HEAD /docs/*"]).matches(method, path) is public


@pytest.mark.parametrize(
    ("method", "public"), [("OPTIONS", True), ("GET", False), (WEBSOCKET, False)]
)
def test_options_everywhere_for_cors_preflight(method: str | None, public: bool) -> None:
    assert PublicRoutes(["OPTIONS /*"]).matches(method, "/any/path") is public


def test_methods_are_case_insensitive_in_rules() -> None:
    assert PublicRoutes(["get /health"]).matches("GET", "/health")


@pytest.mark.parametrize(
    ("rules", "methods"),
    [
        (["GET /a", "POST /a"], {"GET": True, "POST": True, "PUT": False, WEBSOCKET: False}),
        (["GET /a", "/a"], {"GET": True, "PUT": True, WEBSOCKET: True}),
        (["/a", "GET /a"], {"GET": True, "PUT": True, WEBSOCKET: True}),
        (["GET /a", "GET /a"], {"GET": True, "PUT": False}),
    ],
)
def test_rules_for_one_path_add_up(rules: list[str], methods: dict[str | None, bool]) -> None:
    routes = PublicRoutes(rules)
    assert {method: routes.matches(method, "/a") for method in methods} == methods


def test_any_rule_of_several_may_match() -> None:
    routes = PublicRoutes(["/health", "/static/*", "OPTIONS /*"])
    assert [
        routes.matches("GET", "/health"),
        routes.matches("GET", "/static/app.js"),
        routes.matches("OPTIONS", "/me"),
        routes.matches("GET", "/me"),
    ] == [True, True, True, False]


@pytest.mark.parametrize(("rules", "truth"), [([], False), (["/a"], True), (["/a/*"], True)])
def test_routes_are_true_when_they_hold_a_rule(rules: list[str], truth: bool) -> None:
    assert bool(PublicRoutes(rules)) is truth


def test_no_rules_match_nothing() -> None:
    assert not PublicRoutes([]).matches("GET", "/")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("", "a public route is 'PATH' or 'METHODS PATH', got ''"),
        ("GET HEAD /docs", "a public route is 'PATH' or 'METHODS PATH', got 'GET HEAD /docs'"),
        ("health", "a public route path starts with '/' and may end with '/*', got 'health'"),
        (
            "GET health",
            "a public route path starts with '/' and may end with '/*', got 'GET health'",
        ),
        ("/a*/b", "a public route path starts with '/' and may end with '/*', got '/a*/b'"),
        ("*", "a public route path starts with '/' and may end with '/*', got '*'"),
        (", /admin", "a public route names no method: ', /admin'"),
        (
            "/docs*",
            "in public route '/docs*', '*' must follow '/': '/docs*' would also match "
            "'/docs-internal'; write '/docs/*' for '/docs' and every path below it",
        ),
    ],
)
def test_a_malformed_rule_is_a_configuration_error(rule: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        PublicRoutes([rule])
    assert refused.value.message == message

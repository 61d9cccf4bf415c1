"""The one settings path: resolve_settings, KeySetOptions, and the entry points that use them."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette

from starlette_betterauth import (
    BetterAuthMiddleware,
    KeySetOptions,
    TokenVerifier,
)
from starlette_betterauth._settings import (
    DEFAULT_JWKS_PATH,
    MAX_LEEWAY,
    ResolvedSettings,
    resolve_settings,
)
from starlette_betterauth.errors import ConfigurationError

BASE = "https://auth.example.com"


def test_defaults_follow_better_auth_layout() -> None:
    resolved = resolve_settings({"base_url": BASE + "/"})
    assert resolved == ResolvedSettings(
        base_url=BASE,
        jwks_url=BASE + DEFAULT_JWKS_PATH,
        issuer=BASE,
        audiences=frozenset({BASE}),
        algorithms=frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"}),
        leeway=10.0,
        require_exp=True,
        key_set=KeySetOptions(),
    )


def test_environment_supplies_the_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BETTER_AUTH_URL", BASE)
    assert resolve_settings({}).issuer == BASE


def test_opt_outs_leave_issuer_and_audience_unchecked() -> None:
    resolved = resolve_settings(
        {"jwks_url": BASE + "/keys", "verify_issuer": False, "verify_audience": False}
    )
    assert (resolved.issuer, resolved.audiences, resolved.base_url) == (None, None, None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_url": BASE, "tll": 1}, "unknown setting 'tll'"),
        ({"base_url": BASE, "isuer": "x"}, "unknown setting 'isuer' (did you mean 'issuer'?)"),
        (
            {"base_url": BASE, "jwks_options": {"ttl": 1}},
            "jwks_options is not a setting: pass key_set=KeySetOptions(...)",
        ),
        (
            {"base_url": BASE, "refresh_cooldown": 1},
            "refresh_cooldown is not a setting: pass key_set=KeySetOptions(refresh_cooldown=...)",
        ),
        ({"base_url": 42}, "base_url must be a string, got int"),
        ({"base_url": BASE, "verify_issuer": "no"}, "verify_issuer must be True or False"),
        ({"base_url": BASE, "key_set": {"ttl": 1}}, "key_set must be a KeySetOptions(...)"),
        ({"base_url": BASE, "algorithms": "EdDSA"}, "algorithms must be a non-empty subset"),
        ({"base_url": BASE, "algorithms": ["HS256"]}, "algorithms must be a non-empty subset"),
        ({"base_url": BASE, "audience": [""]}, "audience must be a non-empty string"),
        ({"base_url": BASE, "issuer": ""}, "issuer must be a non-empty string"),
        ({"jwks_url": BASE + "/keys"}, "issuer= is required"),
        ({"jwks_url": BASE + "/keys", "issuer": BASE}, "audience= is required"),
        ({"base_url": "ftp://auth.example.com"}, "base_url must be an http(s) URL"),
        ({"base_url": BASE, "leeway": float("inf")}, "leeway must be at most 300 seconds"),
        ({"base_url": BASE, "leeway": 1e12}, "leeway must be at most 300 seconds"),
        ({"base_url": BASE, "leeway": float("nan")}, "leeway must be a number of seconds >= 0"),
        ({"base_url": BASE, "leeway": True}, "leeway must be a number of seconds >= 0"),
    ],
)
def test_every_bad_value_names_its_setting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_settings(settings)
    assert caught.value.message.startswith(message)


def test_leeway_bound_is_inclusive() -> None:
    assert resolve_settings({"base_url": BASE, "leeway": MAX_LEEWAY}).leeway == MAX_LEEWAY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": 0}, "ttl must be a positive number of seconds"),
        ({"timeout": float("inf")}, "timeout must be a positive number of seconds"),
        ({"refresh_cooldown": -1}, "refresh_cooldown must be a finite number of seconds >= 0"),
        ({"retry_interval": "5"}, "retry_interval must be a finite number of seconds >= 0"),
        ({"max_body_size": 1.5}, "max_body_size must be a positive number of bytes"),
    ],
)
def test_key_set_options_are_checked_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KeySetOptions(**options)


def test_middleware_and_verifier_share_the_path() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting 'tll'"):
        BetterAuthMiddleware(Starlette(), base_url=BASE, tll=1)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="unknown setting 'tll'"):
        TokenVerifier.for_server(BASE, tll=1)  # type: ignore[call-arg]
    verifier = TokenVerifier.for_server(BASE, key_set=KeySetOptions(ttl=600))
    assert verifier.jwks.options.ttl == 600
    middleware = BetterAuthMiddleware(Starlette(), base_url=BASE, leeway=30)
    assert middleware.verifier.rules.leeway == 30


def test_verifier_and_settings_together_name_what_was_given() -> None:
    verifier = TokenVerifier.for_server(BASE)
    with pytest.raises(ConfigurationError, match=r"\(issuer, leeway\), not both"):
        BetterAuthMiddleware(Starlette(), verifier=verifier, issuer=BASE, leeway=1)

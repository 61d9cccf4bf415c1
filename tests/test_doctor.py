"""The doctor's checks and fix texts, called as plain functions (no argparse, no server)."""

from __future__ import annotations

import time

import pytest

from starlette_betterauth import _doctor as doctor
from starlette_betterauth._compact import parse_token
from starlette_betterauth._jwks import JWKSCache
from starlette_betterauth._verifier import TokenVerifier
from starlette_betterauth.errors import (
    BannedUserError,
    BetterAuthError,
    DPoPBindingError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidIssuerError,
    KeySetFetchError,
    KeySetInvalidError,
    MalformedTokenError,
    OpaqueTokenError,
    TokenTypeError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from starlette_betterauth.testing import Issuer

BASE = "https://auth.example.com"


def verifier(leeway: float = 10.0) -> TokenVerifier:
    return TokenVerifier(
        JWKSCache(BASE + "/api/auth/jwks"), issuer=BASE, audience=BASE, leeway=leeway
    )


@pytest.mark.parametrize(
    ("offset", "status", "words"),
    [
        (None, "skip", "no Date header"),
        (1.0, "ok", "within 2 s"),
        (-5.0, "warn", "behind this machine's; tokens still pass within the 10 s leeway"),
        (60.0, "fail", "fresh tokens will be refused as issued in the future"),
        (-60.0, "fail", "tokens will be refused before they expire"),
    ],
)
def test_clock_check(offset: float | None, status: str, words: str) -> None:
    check = doctor.clock_check(offset, 10.0)
    assert (check.name, check.status) == ("clock", status)
    assert words in check.detail
    assert (check.fix is None) == (status in ("ok", "skip"))


def test_issuer_fix_names_the_trailing_slash() -> None:
    token = Issuer(BASE + "/").token()
    fix = doctor.explain(InvalidIssuerError("x"), parse_token(token), verifier())
    assert fix is not None
    assert fix.startswith(f"set issuer='{BASE}/' (--issuer)")
    assert fix.endswith("(they differ only by a trailing slash)")


def test_issuer_fix_for_an_empty_iss_points_at_baseurl() -> None:
    token = Issuer(BASE).token(iss="")
    fix = doctor.explain(InvalidIssuerError("x"), parse_token(token), verifier())
    assert fix is not None
    assert "cannot resolve its baseURL" in fix


def test_audience_fix_offers_the_token_audience() -> None:
    token = Issuer(BASE).token(aud=["api-one", "api-two"])
    fix = doctor.explain(InvalidAudienceError("x"), parse_token(token), verifier())
    assert fix == (
        "set audience='api-one' (--audience) if this API should accept it, or set "
        f"jwt.audience on the Better Auth server to {BASE!r}"
    )


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (MalformedTokenError("x"), "copy the whole JWT"),
        (ExpiredTokenError("x"), "get a fresh token"),
        (ImmatureTokenError("x"), "now 30 s"),
        (UnknownKeyError("x"), "signed by another Better Auth server"),
        (BannedUserError("x"), "allow_banned=True"),
    ],
)
def test_explain_gives_a_fix_per_refusal(error: BetterAuthError, words: str) -> None:
    fix = doctor.explain(error, None, verifier(leeway=30))
    assert fix is not None
    assert words in fix


def test_explain_leaves_self_explaining_errors_alone() -> None:
    assert doctor.explain(OpaqueTokenError("x"), None, None) is None


def test_alg_fix_tells_hmac_from_a_narrowed_list() -> None:
    narrowed = TokenVerifier(
        JWKSCache(BASE + "/jwks"), issuer=None, audience=None, algorithms=["ES256"]
    )
    eddsa = parse_token(Issuer(BASE).token())
    fix = doctor.explain(UnsupportedAlgorithmError("x"), eddsa, narrowed)
    assert fix is not None
    assert fix.startswith("add EdDSA to the accepted algorithms")


def test_key_server_fix_depends_on_the_failure() -> None:
    url = BASE + "/api/auth/jwks"
    assert "reachable from here" in doctor.key_server_fix(KeySetFetchError("x"), url)
    assert "not with a usable JSON Web Key Set" in doctor.key_server_fix(
        KeySetInvalidError("x"), url
    )


def test_times_render_exp_iat_and_skip_nonsense() -> None:
    now = time.time()
    rendered = doctor.times({"iat": now - 60, "exp": now + 900, "nbf": "soon"}, now)
    assert set(rendered) == {"iat", "exp"}
    assert rendered["exp"]["relative"] == "expires in 15 min"
    assert rendered["iat"]["relative"] == "issued 60 s ago"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45, "45 s"), (720, "12 min"), (3 * 3600 + 300, "3 h 5 min"), (9 * 86400, "9 days")],
)
def test_span(seconds: float, text: str) -> None:
    assert doctor.span(seconds) == text


def test_clean_escapes_control_characters() -> None:
    assert doctor.clean("ok\x1b[31m") == "ok\\x1b[31m"


# -- OAuth access tokens -------------------------------------------------------------


def test_access_token_fix_texts() -> None:
    expected = BASE + "/api/auth"
    assert "replaces the OAuth provider's issuer" in doctor.access_token_issuer_fix(BASE, expected)
    assert "baseURL + basePath" in doctor.access_token_issuer_fix(BASE + "/auth", expected)
    assert "set jwt.issuer" in doctor.access_token_issuer_fix(None, expected)
    assert "ID token" in doctor.typ_fix(None, {"nonce": "n"})
    assert "BearerJWT()" in doctor.typ_fix(None, {"iss": BASE})
    assert "this one says 'dpop+jwt'" in doctor.typ_fix("dpop+jwt", {})
    fix = doctor.resource_fix("https://other", frozenset({"https://api"}))
    assert fix.startswith("the client must ask for the token with resource='https://api'")
    assert "'https://other'" in fix
    assert "Authorization: DPoP" in doctor.dpop_fix()
    assert "--resource https://api;" in doctor.oauth_token_fix(
        {"aud": [BASE + "/api/auth/oauth2/userinfo", "https://api"]}
    )
    assert "--resource <the resource" in doctor.oauth_token_fix({"aud": 3})


def test_explain_names_the_access_token_fixes() -> None:
    issuer = Issuer(BASE)
    access = TokenVerifier(
        JWKSCache(BASE + "/api/auth/jwks"),
        issuer=BASE + "/api/auth",
        audience="https://api",
        typ="at+jwt",
    )
    token = parse_token(issuer.access_token(scope="x", audience="https://other"))
    fix = doctor.explain(InvalidAudienceError("aud"), token, access)
    assert fix is not None
    assert fix.startswith("the client must ask for the token")
    fix = doctor.explain(InvalidIssuerError("iss"), token, access)
    assert fix is not None
    assert "basePath" in fix
    assert doctor.explain(TokenTypeError("typ"), parse_token(issuer.id_token()), access) == (
        doctor.typ_fix(None, {"nonce": "n"})
    )
    assert doctor.explain(DPoPBindingError("cnf"), token, access) == doctor.dpop_fix()
    fix = doctor.explain(InvalidIssuerError("iss"), token, verifier())
    assert fix is not None
    assert fix.startswith("this is an OAuth access token")

"""``_claims.ClaimRules``: the registered claims of a verified token, rule by rule."""

from __future__ import annotations

from typing import Any

import pytest

from starlette_betterauth._claims import (
    MAX_NUMERIC_DATE,
    ClaimRules,
    numeric_date,
    one_of,
    short_repr,
)
from starlette_betterauth.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
)

ISSUER = "https://auth.example.com"
API = "https://api.example.com"
NOW = 1_700_000_000
RULES = ClaimRules(issuer=ISSUER, audiences=frozenset({ISSUER, API}), leeway=10.0)


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims at NOW with ``changes`` (a claim given as None is removed)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": ISSUER,
        "sub": "u1",
        "iat": NOW - 60,
        "exp": NOW + 840,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def refusal(rules: ClaimRules, payload: dict[str, Any]) -> InvalidClaimError:
    with pytest.raises(InvalidClaimError) as refused:
        rules.check(payload, NOW)
    return refused.value


# -- exp, nbf, iat -----------------------------------------------------------------------------


def test_valid_claims_pass_and_give_exp() -> None:
    assert RULES.check(claims(), NOW) == NOW + 840.0


def test_a_float_exp_is_a_numeric_date() -> None:
    assert RULES.check(claims(exp=NOW + 0.5), NOW) == NOW + 0.5


def test_a_missing_exp_is_refused() -> None:
    error = refusal(RULES, claims(exp=None))
    assert (type(error), error.message) == (InvalidClaimError, "the exp claim is missing")


def test_a_missing_exp_passes_when_not_required() -> None:
    rules = ClaimRules(issuer=ISSUER, audiences=None, require_exp=False)
    assert rules.check(claims(exp=None), NOW) is None


@pytest.mark.parametrize(
    ("exp", "expired"),
    [
        (NOW - 9, False),  # past, within the 10 s leeway
        (NOW - 10, True),  # the leeway is over
        (NOW - 3600, True),
    ],
)
def test_exp_is_checked_with_the_leeway(exp: int, expired: bool) -> None:
    if expired:
        error = refusal(RULES, claims(exp=exp, iat=exp - 900))
        assert (type(error), error.message) == (ExpiredTokenError, "the token has expired")
    else:
        assert RULES.check(claims(exp=exp, iat=exp - 900), NOW) == exp


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["1700000000", True, [NOW], {"t": NOW}])
def test_a_time_claim_that_is_not_a_number_is_refused(name: str, value: object) -> None:
    error = refusal(RULES, claims(**{name: value}))
    assert (type(error), error.message) == (
        InvalidClaimError,
        f"the {name} claim is not a JSON number",
    )


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_a_time_claim_that_is_null_is_refused(name: str) -> None:
    payload = claims()
    payload[name] = None
    assert refusal(RULES, payload).message == f"the {name} claim is not a JSON number"


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", [-1, MAX_NUMERIC_DATE + 1, float("nan"), float("inf")])
def test_a_time_claim_out_of_range_is_refused(name: str, value: float) -> None:
    error = refusal(RULES, claims(**{name: value}))
    assert (type(error), error.message) == (InvalidClaimError, f"the {name} claim is out of range")


FUTURE = {
    "nbf": "the token is not valid yet (nbf is in the future)",
    "iat": "the token was issued in the future (check the clocks)",
}


@pytest.mark.parametrize("name", FUTURE)
@pytest.mark.parametrize(("ahead", "immature"), [(10, False), (11, True)])
def test_nbf_and_iat_are_checked_with_the_leeway(name: str, ahead: int, immature: bool) -> None:
    payload = claims(**{name: NOW + ahead})
    if immature:
        error = refusal(RULES, payload)
        assert (type(error), error.message) == (ImmatureTokenError, FUTURE[name])
    else:
        assert RULES.check(payload, NOW) == NOW + 840


def test_iat_and_nbf_may_be_absent() -> None:
    assert RULES.check(claims(iat=None), NOW) == NOW + 840


def test_times_error_returns_the_error_check_times_raises() -> None:
    error = RULES.times_error(claims(exp=NOW - 3600), NOW)
    assert type(error) is ExpiredTokenError
    assert RULES.times_error(claims(), NOW) is None


# -- iss, aud, sub -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iss", "shown"),
    [
        ("https://evil.example", "'https://evil.example'"),
        (ISSUER + "/", repr(ISSUER + "/")),
        (None, "None"),
        ([ISSUER], repr([ISSUER])),
        ("x" * 200, "'" + "x" * 76 + "..."),
    ],
)
def test_another_issuer_is_refused(iss: object, shown: str) -> None:
    payload = claims()
    payload["iss"] = iss
    error = refusal(RULES, payload)
    assert type(error) is InvalidIssuerError
    assert error.message == f"iss is {shown} but the expected issuer is {ISSUER!r}"


def test_no_expected_issuer_skips_the_check() -> None:
    rules = ClaimRules(issuer=None, audiences=None)
    assert rules.check(claims(iss=None), NOW) == NOW + 840


@pytest.mark.parametrize("aud", [ISSUER, API, [API], ["other", API], [7, ISSUER], [ISSUER, ISSUER]])
def test_an_audience_naming_an_accepted_one_passes(aud: object) -> None:
    assert RULES.check(claims(aud=aud), NOW) == NOW + 840


@pytest.mark.parametrize("aud", ["other", ["other"], [], [[API]], 7, {"aud": API}, ""])
def test_an_audience_naming_none_accepted_is_refused(aud: object) -> None:
    error = refusal(RULES, claims(aud=aud))
    assert type(error) is InvalidAudienceError
    assert error.message == (f"aud is {aud!r} but the accepted audience is {API!r} or {ISSUER!r}")


def test_a_missing_audience_is_refused() -> None:
    error = refusal(RULES, claims(aud=None))
    assert type(error) is InvalidAudienceError
    assert error.message.startswith("aud is None but")


def test_no_accepted_audiences_skips_the_check() -> None:
    rules = ClaimRules(issuer=ISSUER, audiences=None)
    assert rules.check(claims(aud=None), NOW) == NOW + 840


@pytest.mark.parametrize("sub", [None, "", 7, ["u1"]])
def test_sub_must_be_a_non_empty_string(sub: object) -> None:
    payload = claims()
    payload["sub"] = sub
    error = refusal(RULES, payload)
    assert (type(error), error.message) == (
        InvalidClaimError,
        "the sub claim is missing or not a non-empty string",
    )


def test_sub_is_not_needed_when_not_required() -> None:
    rules = ClaimRules(issuer=ISSUER, audiences=None, require_sub=False)
    assert rules.check(claims(sub=None), NOW) == NOW + 840


# -- which rule answers first ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "first"),
    [
        ({"exp": NOW - 3600, "iss": "x", "aud": "x", "sub": ""}, ExpiredTokenError),
        ({"iss": "x", "aud": "x", "sub": ""}, InvalidIssuerError),
        ({"aud": "x", "sub": ""}, InvalidAudienceError),
    ],
)
def test_times_then_issuer_then_audience_then_sub(
    changes: dict[str, Any], first: type[InvalidClaimError]
) -> None:
    assert type(refusal(RULES, claims(**changes))) is first


def test_the_single_checks_return_their_error_or_none() -> None:
    wrong = claims(iss="x", aud="x", sub="")
    assert type(RULES.issuer_error(wrong)) is InvalidIssuerError
    assert type(RULES.audience_error(wrong)) is InvalidAudienceError
    assert type(RULES.sub_error(wrong)) is InvalidClaimError
    right = claims()
    assert (RULES.issuer_error(right), RULES.audience_error(right), RULES.sub_error(right)) == (
        None,
        None,
        None,
    )


# -- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"), [({}, None), ({"t": 5}, 5.0), ({"t": 0.25}, 0.25)]
)
def test_numeric_date(payload: dict[str, Any], expected: float | None) -> None:
    assert numeric_date(payload, "t") == expected


def test_one_of_lists_names_sorted() -> None:
    assert one_of(frozenset({"b", "a"})) == "'a' or 'b'"


@pytest.mark.parametrize(
    ("value", "limit", "shown"),
    [("abc", 80, "'abc'"), ("abcdefgh", 6, "'ab..."), ("abcd", 6, "'abcd'")],
)
def test_short_repr_cuts_long_values(value: str, limit: int, shown: str) -> None:
    assert short_repr(value, limit) == shown

"""Which Better Auth credential a pasted value is (``_pasted.classify``), without verifying it."""

from __future__ import annotations

import pytest

from starlette_betterauth._cookies import encode_cookie_value
from starlette_betterauth._pasted import classify, session_cookie_prefixes, session_token_form
from starlette_betterauth.errors import ConfigurationError
from starlette_betterauth.testing import Issuer


def test_jwts_and_session_tokens(issuer: Issuer) -> None:
    session = issuer.session()
    assert classify(issuer.token()).kind == "jwt"
    assert classify("a.b.c").kind == "jwt"  # refused later, as a JWT, with the reason
    assert classify("abc.def").kind == "jwt"  # not a raw token before the dot
    for value, form in (
        (session.token, "raw"),
        (session.signed_token, "signed"),
        (encode_cookie_value(session.signed_token), "signed"),
        (session.token + ".short", "malformed"),
    ):
        pasted = classify(value)
        assert (pasted.kind, pasted.token_form, pasted.text) == ("session_token", form, value)


def test_session_data_value_becomes_the_cookie_a_browser_sends(issuer: Issuer) -> None:
    session = issuer.session()
    (value,) = issuer.session_data_cookie(session).values()
    pasted = classify(value)
    assert (pasted.kind, pasted.source) == ("session_cookie", "session_data")
    assert pasted.text == f"better-auth.session_data={value}"
    assert pasted.found.data == value
    assert pasted.parsed is not None
    assert pasted.parsed.claims["sid"] == session.token
    assert classify(value, cookie_prefix="app").text == f"app.session_data={value}"


@pytest.mark.parametrize(
    ("text", "prefix", "others"),
    [
        ("Cookie: better-auth.session_token=x; theme=dark", "better-auth", ("theme",)),
        ("cookie:a=1; b=2", "better-auth", ("a", "b")),
        ("a=1; b=2", "better-auth", ("a", "b")),
        ("__Secure-app.session_data.0=x", "app", ()),
        ("x.session_token=1; better-auth.session_data=2", "better-auth", ("x.session_token",)),
    ],
)
def test_cookie_headers_and_prefixes(text: str, prefix: str, others: tuple[str, ...]) -> None:
    pasted = classify(text)
    assert (pasted.kind, pasted.source) == ("session_cookie", "cookie_header")
    assert pasted.cookie_prefix == prefix
    assert pasted.others == others


def test_an_explicit_prefix_wins_and_the_others_are_still_listed() -> None:
    pasted = classify("app.session_token=x", cookie_prefix="better-auth")
    assert not pasted.found.present
    assert pasted.prefixes == ("app",)
    assert session_cookie_prefixes({"a.session_token": "", "b.session_data.3": "x"}) == ("b",)
    with pytest.raises(ConfigurationError):
        classify("a=1; b=2", cookie_prefix="a b")


def test_session_token_forms() -> None:
    assert session_token_form("A" * 32) == "raw"
    assert session_token_form("A" * 15) is None
    assert session_token_form("A" * 32 + "." + "B" * 43 + "=") == "signed"
    assert session_token_form("A" * 32 + ".x") == "malformed"
    assert session_token_form("A" * 32 + ".x.y") is None

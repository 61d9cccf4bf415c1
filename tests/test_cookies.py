"""Cookie parsing, Better Auth's session cookie names and chunks, signed session tokens."""

from __future__ import annotations

import pytest

from starlette_betterauth._cookies import (
    DEFAULT_COOKIE_NAMES,
    MAX_CHUNKS,
    MAX_COOKIE_BYTES,
    MAX_HEADER_BYTES,
    CookieNames,
    SessionCookies,
    encode_cookie_value,
    find_session_cookies,
    parse_cookies,
    sign_session_token,
    split_signed_token,
)
from starlette_betterauth.errors import ConfigurationError, InvalidSessionError

# Observed on a real better-auth 1.7.25 server with this secret: the Set-Cookie value of
# better-auth.session_token for the session token sign-up returned.
OBSERVED_SECRET = "probe-secret-probe-secret-probe-secret-0123"
OBSERVED_TOKEN = "hqpk1OpIlc4Xr92DS7Lc45CLKFIC5Lax"
OBSERVED_COOKIE = f"{OBSERVED_TOKEN}.ZSxBkcS7yz06NSSzBs1TjnDaR5WEiivFUGgwNjYKTtc%3D"


# -- parse_cookies ---------------------------------------------------------------


def test_parses_pairs_tolerating_spaces_tabs_and_empty_parts() -> None:
    assert parse_cookies(" a=1 ;b = 2;\tc=\t3 ;; ;d=") == {"a": "1", "b": "2", "c": "3", "d": ""}


def test_quoted_values_lose_their_quotes() -> None:
    assert parse_cookies('a="x y"; b="; c="') == {"a": "x y", "b": '"', "c": '"'}


def test_first_of_duplicate_names_wins() -> None:
    assert parse_cookies("a=first; b=1; a=second") == {"a": "first", "b": "1"}


def test_names_are_case_sensitive_and_pairs_without_name_or_equals_are_skipped() -> None:
    assert parse_cookies("A=1; a=2; =3; flag; x=y=z") == {"A": "1", "a": "2", "x": "y=z"}


def test_percent_escapes_are_decoded_as_better_auth_does() -> None:
    assert parse_cookies("t=" + OBSERVED_COOKIE)["t"].endswith("KTtc=")
    assert parse_cookies("u=%E2%9C%93")["u"] == "\u2713"
    assert parse_cookies("l=a%3db%2Fc%2f%7E%25%00")["l"] == "a=b/c/~%\x00"
    assert parse_cookies("m=%41%C3%A9")["m"] == "A\u00e9"  # ASCII and not, together


@pytest.mark.parametrize("value", ["50%", "%zz", "a%3Db%2", "%FF"])
def test_values_that_do_not_decode_stay_as_sent(value: str) -> None:
    assert parse_cookies(f"v={value}") == {"v": value}


def test_several_headers_are_joined_in_order_and_bytes_are_latin1() -> None:
    assert parse_cookies([b"a=1; b=2", "a=3; c=4", b"d=\xe9"]) == {
        "a": "1",
        "b": "2",
        "c": "4",
        "d": "\xe9",
    }
    assert parse_cookies(b"a=1") == {"a": "1"}
    assert parse_cookies([]) == {}


def test_a_pair_longer_than_the_cookie_bound_is_ignored() -> None:
    big = "x" * MAX_COOKIE_BYTES
    assert parse_cookies(f"a=1; big={big}; b=2") == {"a": "1", "b": "2"}
    fits = "x" * (MAX_COOKIE_BYTES - len("ok="))
    assert parse_cookies(f"ok={fits}") == {"ok": fits}


def test_only_pairs_ending_within_the_header_bound_are_read() -> None:
    filler = "; ".join(f"c{i}={'v' * 1000}" for i in range(40))  # about 40 KiB
    cookies = parse_cookies(filler + "; late=1")
    assert "late" not in cookies
    assert 0 < len(cookies) < 40
    assert all(value == "v" * 1000 for value in cookies.values())  # none cut short


def test_the_header_bound_spans_several_headers() -> None:
    first = "; ".join(f"a{i}={'v' * 4000}" for i in range(8))  # 8 * 4004 characters and "; "s
    cookies = parse_cookies([first, "b=1; c=" + "v" * 800, "d=3"])
    assert list(cookies) == [*(f"a{i}" for i in range(8)), "b"]
    assert parse_cookies(["x" * (MAX_HEADER_BYTES + 5)]) == {}
    assert parse_cookies(["a=1", "b=" + "v" * MAX_HEADER_BYTES, "c=3"]) == {"a": "1"}


def test_encode_cookie_value_matches_encode_uri_component() -> None:
    assert encode_cookie_value("ab.c+/=") == "ab.c%2B%2F%3D"
    assert encode_cookie_value("-_.!~*'()") == "-_.!~*'()"
    assert encode_cookie_value("a b;\u2713") == "a%20b%3B%E2%9C%93"
    assert parse_cookies("v=" + encode_cookie_value("x y=%;\u2713")) == {"v": "x y=%;\u2713"}


# -- names and lookup ---------------------------------------------------------------


def test_names_for_a_prefix_prefer_secure_then_host_then_bare() -> None:
    names = CookieNames.for_prefix("myapp")
    assert names.session_token == (
        "__Secure-myapp.session_token",
        "__Host-myapp.session_token",
        "myapp.session_token",
    )
    assert names.session_data[-1] == "myapp.session_data"
    assert DEFAULT_COOKIE_NAMES.prefix == "better-auth"


@pytest.mark.parametrize("prefix", ["", "a b", "a;b", "a=b", "caf\u00e9", 3])
def test_unusable_prefixes_are_a_configuration_error(prefix: object) -> None:
    with pytest.raises(ConfigurationError, match="cookie_prefix"):
        CookieNames.for_prefix(prefix)  # type: ignore[arg-type]


def test_finds_the_token_and_data_cookies() -> None:
    found = find_session_cookies(
        parse_cookies(
            f"other=1; better-auth.session_token={OBSERVED_COOKIE}; better-auth.session_data=j.w.t"
        )
    )
    assert found.token_name == "better-auth.session_token"
    assert found.token_value is not None
    assert split_signed_token(found.token_value)[0] == OBSERVED_TOKEN
    assert (found.data, found.data_names) == ("j.w.t", ("better-auth.session_data",))
    assert found.present


def test_secure_variant_wins_over_a_bare_leftover() -> None:
    found = find_session_cookies(
        {
            "better-auth.session_token": "bare",
            "__Secure-better-auth.session_token": "secure",
            "__Host-better-auth.session_data": "host",
            "better-auth.session_data": "bare",
        }
    )
    assert (found.token_name, found.token_value) == ("__Secure-better-auth.session_token", "secure")
    assert (found.data, found.data_names) == ("host", ("__Host-better-auth.session_data",))


def test_other_prefixes_and_empty_values_do_not_count() -> None:
    cookies = {"better-auth.session_token": "", "myapp.session_token": "t.s", "x": "1"}
    assert find_session_cookies(cookies) == SessionCookies()
    assert not find_session_cookies(cookies).present
    assert find_session_cookies({}) == SessionCookies()
    mine = find_session_cookies(cookies, CookieNames.for_prefix("myapp"))
    assert (mine.token_value, mine.data) == ("t.s", None)


def test_chunks_are_joined_in_index_order() -> None:
    header = (
        "better-auth.session_data.1=BBB; better-auth.session_data.0=AAA; "
        "better-auth.session_data.2=CC"
    )
    found = find_session_cookies(parse_cookies(header))
    assert found.data == "AAABBBCC"
    assert found.data_names == tuple(f"better-auth.session_data.{i}" for i in range(3))
    assert found.token_value is None
    assert found.present


def test_the_unchunked_cookie_wins_over_chunks() -> None:
    found = find_session_cookies(
        {"better-auth.session_data": "whole", "better-auth.session_data.0": "part"}
    )
    assert found.data == "whole"


def test_chunks_stop_at_the_first_missing_index() -> None:
    found = find_session_cookies(
        {"better-auth.session_data.0": "A", "better-auth.session_data.2": "C"}
    )
    assert found.data == "A"
    assert find_session_cookies({"better-auth.session_data.1": "B"}).data is None


def test_more_chunks_than_the_bound_count_as_no_cookie_cache() -> None:
    at_bound = {f"better-auth.session_data.{i}": "x" for i in range(MAX_CHUNKS)}
    assert find_session_cookies(at_bound).data == "x" * MAX_CHUNKS
    over = {**at_bound, f"better-auth.session_data.{MAX_CHUNKS}": "x"}
    assert find_session_cookies(over).data is None


def test_secure_chunks_win_over_bare_chunks() -> None:
    found = find_session_cookies(
        {
            "better-auth.session_data.0": "bare",
            "__Secure-better-auth.session_data.0": "sec",
            "__Secure-better-auth.session_data.1": "ure",
        }
    )
    assert found.data == "secure"


# -- signed tokens ---------------------------------------------------------------


def test_signature_matches_the_one_better_auth_set() -> None:
    decoded = parse_cookies("t=" + OBSERVED_COOKIE)["t"]
    assert sign_session_token(OBSERVED_TOKEN, OBSERVED_SECRET) == decoded
    assert encode_cookie_value(decoded) == OBSERVED_COOKIE
    assert split_signed_token(decoded, secret=OBSERVED_SECRET) == (OBSERVED_TOKEN, decoded[33:])
    assert split_signed_token(decoded, secret=OBSERVED_SECRET.encode())[0] == OBSERVED_TOKEN


def test_a_wrong_secret_or_tampered_token_is_refused() -> None:
    signed = sign_session_token("tokentokentoken", "secret")
    with pytest.raises(InvalidSessionError, match="does not match the secret"):
        split_signed_token(signed, secret="another")
    with pytest.raises(InvalidSessionError, match="does not match"):
        split_signed_token("tokentokentokem" + signed[15:], secret="secret")
    # Without a secret only the form is checked.
    assert split_signed_token(signed)[0] == "tokentokentoken"


def test_the_token_is_everything_before_the_last_dot() -> None:
    signed = sign_session_token("a.b.c", "s")
    assert split_signed_token(signed, secret="s")[0] == "a.b.c"


@pytest.mark.parametrize(
    "value",
    [
        "",
        OBSERVED_TOKEN,  # raw, unsigned
        f"{OBSERVED_TOKEN}.",
        f".{'A' * 43}=",  # no token
        f"{OBSERVED_TOKEN}.{'A' * 44}",  # no padding
        f"{OBSERVED_TOKEN}.{'A' * 42}==",  # wrong length for 32 bytes
        f"{OBSERVED_TOKEN}.{'-' * 43}=",  # base64url is not what Better Auth writes
        f"{OBSERVED_TOKEN}.{'A' * 43}=\n",
        f"to ken.{'A' * 43}=",
        f"t\u00e9.{'A' * 43}=",
        f"{'t' * 1025}.{'A' * 43}=",
        OBSERVED_COOKIE,  # still percent-encoded
    ],
)
def test_malformed_signed_tokens_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(InvalidSessionError, match=r"<token>\.<signature>") as caught:
        split_signed_token(value, secret="s")
    if value:
        assert value not in str(caught.value)

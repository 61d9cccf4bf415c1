"""Properties of the Authorization-header and token parsers, for any input (hypothesis).

For every input the parsers return a result or raise the package's own error
(a :class:`BetterAuthError`), never anything else. Their work stays in proportion
to the input: input over a size cap is refused by its length before any parsing,
which the tests see in the reason given (the same for every oversized input,
whatever it contains). No test measures time.
"""

from __future__ import annotations

import json
import string
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from _helpers import asgi_client, bearer, guarded_app, whoami
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from starlette_betterauth import KeySetOptions
from starlette_betterauth._compact import MAX_HEADER_LENGTH, MAX_TOKEN_LENGTH, parse_token
from starlette_betterauth._headers import (
    MAX_AUTHORIZATION_LENGTH,
    bearer_token,
    parse_authorization,
)
from starlette_betterauth.errors import BetterAuthError, InvalidRequestError, MalformedTokenError
from starlette_betterauth.testing import Issuer, JWKSServer, b64url

A = TypeVar("A")
R = TypeVar("R")
# No deadline: a slow machine must not fail a property. No database: nothing written.
PROPERTY = settings(deadline=None, database=None, max_examples=300)
BASE64URL = string.ascii_letters + string.digits + "-_"
ISSUER = Issuer("http://127.0.0.1:1")
KEY = ISSUER.current_key
GENUINE = ISSUER.token(key=KEY)


def outcome(call: Callable[[A], R], argument: A) -> R | BetterAuthError:
    """The result, or the package's error; any other exception propagates (and fails)."""
    try:
        return call(argument)
    except BetterAuthError as exc:
        return exc


def _reason(call: Any, argument: Any) -> str:
    try:
        call(argument)
    except BetterAuthError as exc:
        return exc.message
    raise AssertionError(f"{argument!r} should be refused")


# What oversized input is refused with, taken from the plainest oversized input.
AUTHORIZATION_TOO_LONG = _reason(parse_authorization, b"x" * (MAX_AUTHORIZATION_LENGTH + 1))
TOKEN_TOO_LONG = _reason(parse_token, "x" * (MAX_TOKEN_LENGTH + 1))
HEADER_TOO_LONG = _reason(parse_token, f"{'e' * (MAX_HEADER_LENGTH + 1)}.e30.AA")


# -- strategies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
segment_text = st.text(alphabet=BASE64URL + "=+/. \t\x00é", max_size=60)


@st.composite
def mutated_genuine(draw: st.DrawFn) -> str:
    """A genuine token with a few characters replaced, inserted or deleted."""
    token = GENUINE
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(token)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        char = draw(st.sampled_from(BASE64URL + ".=+/ \x00é"))
        if edit == "replace" and index < len(token):
            token = token[:index] + char + token[index + 1 :]
        elif edit == "insert":
            token = token[:index] + char + token[index:]
        else:
            token = token[:index] + token[index + 1 :]
    return token


@st.composite
def encoded_documents(draw: st.DrawFn) -> str:
    """Three segments: JSON values or raw bytes, base64url-encoded."""

    def segment() -> str:
        if draw(st.booleans()):
            return b64url(json.dumps(draw(json_values)).encode())
        return b64url(draw(st.binary(max_size=80)))

    return ".".join(segment() for _ in range(3))


@st.composite
def signed_documents(draw: st.DrawFn) -> str:
    """Well-formed tokens with arbitrary JSON headers and claims, genuinely signed."""
    header = draw(json_objects)
    claims = draw(json_objects)
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    return f"{signing_input}.{b64url(KEY.sign_bytes(signing_input.encode()))}"


tokens = (
    st.text(max_size=300)
    | st.lists(segment_text, min_size=0, max_size=6).map(".".join)
    | encoded_documents()
    | signed_documents()
    | mutated_genuine()
    | st.just(GENUINE)
)
authorization_values = st.binary(max_size=400) | st.builds(
    lambda scheme, separator, token: scheme + separator + token,
    st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"bEaReR", b"Basic", b"Bearerx", b""]),
    st.sampled_from([b" ", b"  ", b"\t", b"", b" \t"]),
    tokens.map(lambda token: token.encode("utf-8")) | st.binary(max_size=100),
)
header_names = st.sampled_from(
    [b"authorization", b"Authorization", b"AUTHORIZATION", b"x-authorization", b"authorizatio"]
) | st.binary(max_size=16)
oversize = st.integers(1, 4096)


# -- parse_authorization ------------------------------------------------------------------


@PROPERTY
@given(authorization_values)
def test_parse_authorization_returns_a_token_or_its_own_error(value: bytes) -> None:
    token = outcome(parse_authorization, value)
    if isinstance(token, BetterAuthError):
        assert isinstance(token, InvalidRequestError)
        return
    assert isinstance(token, str)
    assert token
    scheme, _, rest = value.partition(b" ")
    assert scheme.lower() == b"bearer"
    assert rest.endswith(token.encode("latin-1"))


@PROPERTY
@given(authorization_values, oversize)
def test_oversized_authorization_is_refused_by_length(value: bytes, extra: int) -> None:
    padded = (value + b"Bearer " + GENUINE.encode()) * 2
    padded += b"A" * (MAX_AUTHORIZATION_LENGTH + extra - len(padded))
    with pytest.raises(InvalidRequestError) as refused:
        parse_authorization(padded)
    assert refused.value.message == AUTHORIZATION_TOO_LONG


# -- bearer_token ----------------------------------------------------------------------------


@PROPERTY
@given(st.lists(st.tuples(header_names, authorization_values), max_size=6))
def test_bearer_token_finds_at_most_one_authorization(headers: list[tuple[bytes, bytes]]) -> None:
    present = [value for name, value in headers if name.lower() == b"authorization"]
    token = outcome(bearer_token, headers)
    if isinstance(token, BetterAuthError):
        assert isinstance(token, InvalidRequestError)
        assert present
        return
    assert len(present) <= 1
    if present:
        assert token == parse_authorization(present[0])
    else:
        assert token is None


# -- parse_token ------------------------------------------------------------------------------


@PROPERTY
@given(tokens)
def test_parse_token_returns_a_parsed_token_or_its_own_error(token: str) -> None:
    parsed = outcome(parse_token, token)
    if isinstance(parsed, BetterAuthError):
        assert isinstance(parsed, MalformedTokenError)
        assert token not in parsed.message or len(token) < 8
        return
    assert type(parsed.header) is dict
    assert type(parsed.claims) is dict
    assert isinstance(parsed.signature, bytes)
    assert parsed.signature
    header, payload, _ = token.split(".")
    assert parsed.signing_input == f"{header}.{payload}".encode("ascii")


@PROPERTY
@given(tokens, oversize)
def test_oversized_token_is_refused_by_length(token: str, extra: int) -> None:
    # Deep nesting and many segments: costly to parse, refused before parsing.
    nested = b64url(("[" * 2000 + "]" * 2000).encode())
    padded = f"{token}.{nested}." * 2
    padded += "A" * (MAX_TOKEN_LENGTH + extra - len(padded))
    with pytest.raises(MalformedTokenError) as refused:
        parse_token(padded)
    assert refused.value.message == TOKEN_TOO_LONG


@PROPERTY
@given(st.text(alphabet=BASE64URL, min_size=MAX_HEADER_LENGTH + 1, max_size=MAX_HEADER_LENGTH + 64))
def test_oversized_header_is_refused_before_decoding(header: str) -> None:
    token = f"{header}.{b64url(ISSUER.claims())}.{b64url(b'signature')}"
    with pytest.raises(MalformedTokenError) as refused:
        parse_token(token)
    assert refused.value.message == HEADER_TOO_LONG


# -- through the middleware ------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_server() -> Iterator[JWKSServer]:
    with JWKSServer(ISSUER) as server:
        yield server


@pytest.fixture
async def client(key_server: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    # The issuer of the module's tokens is fixed; only signatures and claims vary.
    app = guarded_app(
        [Route("/", whoami)],
        jwks_url=key_server.jwks_url,
        issuer=ISSUER.base_url,
        audience=ISSUER.base_url,
        key_set=KeySetOptions(refresh_cooldown=0),
    )
    async with asgi_client(app) as client:
        assert (await client.get("/", headers=bearer(GENUINE))).is_success
        yield client


@pytest.mark.anyio
@settings(
    deadline=None,
    database=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=authorization_values)
async def test_any_authorization_is_answered_200_or_401(
    client: httpx.AsyncClient, value: bytes
) -> None:
    response = await client.get("/", headers=[(b"authorization", value)])
    assert response.status_code in (200, 401)
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        token = value.partition(b" ")[2].strip(b" ")
        assert len(token) < 16 or token not in response.content

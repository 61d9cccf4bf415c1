"""``_compact.parse_token``: compact JWS parsing, before any key or cryptography."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starlette_betterauth._compact import (
    MAX_HEADER_LENGTH,
    MAX_TOKEN_LENGTH,
    ParsedToken,
    decode_segment,
    parse_token,
)
from starlette_betterauth.errors import MalformedTokenError, OpaqueTokenError
from starlette_betterauth.testing import b64url

SIGNATURE = bytes(range(64))


def fresh_header() -> str:
    """An encoded header no earlier test used, so its first parse takes the precise path."""
    return b64url({"alg": "EdDSA", "kid": secrets.token_hex(8)})


def token(header: str, payload: str, signature: str = b64url(SIGNATURE)) -> str:
    return f"{header}.{payload}.{signature}"


def test_a_token_is_split_and_decoded() -> None:
    header = fresh_header()
    payload = b64url({"sub": "u1", "exp": 1})
    parsed = parse_token(token(header, payload))
    assert isinstance(parsed, ParsedToken)
    assert parsed.header.keys() == {"alg", "kid"}
    assert parsed.claims == {"sub": "u1", "exp": 1}
    assert parsed.signing_input == f"{header}.{payload}".encode("ascii")
    assert parsed.signature == SIGNATURE


def test_a_remembered_header_gives_the_same_result() -> None:
    raw = token(fresh_header(), b64url({"sub": "u1"}))
    first = parse_token(raw)  # the header is new: the precise path, which remembers it
    second = parse_token(raw)  # the header is known: the fast path
    assert second == first


def test_each_caller_owns_its_header() -> None:
    raw = token(fresh_header(), b64url({"sub": "u1"}))
    parse_token(raw)
    parse_token(raw).header["alg"] = "none"
    assert parse_token(raw).header["alg"] == "EdDSA"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b64url("[]"), "the payload is not a JSON object"),
        (b64url("{} x"), "the payload is not valid UTF-8 JSON"),
        (b64url('{"a":1,"a":2}'), "a JSON object has duplicate member names"),
        ("e31", "the payload is not canonical base64url (non-zero trailing bits)"),
    ],
)
def test_a_remembered_header_lets_no_flawed_payload_through(payload: str, message: str) -> None:
    header = fresh_header()
    parse_token(token(header, b64url({"sub": "u1"})))
    with pytest.raises(MalformedTokenError) as refused:
        parse_token(token(header, payload))
    assert refused.value.message == message


H = b64url({"alg": "EdDSA"})
P = b64url({"sub": "u1"})
S = b64url(SIGNATURE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "the token is empty"),
        ("abc", "a JWT has 3 dot-separated segments, this token has 1"),
        (f"{H}.{P}.{S}.{S}", "a JWT has 3 dot-separated segments, this token has 4"),
        (f".{P}.{S}", "the header segment is empty"),
        (f"{H}..{S}", "the payload segment is empty"),
        (f"{H}.{P}.", "the signature segment is empty"),
        (f"{H}=.{P}.{S}", "the header segment is padded; JWTs use unpadded base64url"),
        (f"{H}.{P}.AA==", "the signature segment is padded; JWTs use unpadded base64url"),
        (f"{H}.{P}+.{S}", "the payload segment has characters outside the base64url alphabet"),
        (f"é.{P}.{S}", "the header segment has characters outside the base64url alphabet"),
        (f"{H}.{P}.A B", "the signature segment has characters outside the base64url alphabet"),
        (f"e30AB.{P}.{S}", "the header is not valid base64url (impossible length)"),
        (f"e31.{P}.{S}", "the header is not canonical base64url (non-zero trailing bits)"),
        (f"{H}.{P}.AB", "the signature is not canonical base64url (non-zero trailing bits)"),
        (f"{b64url('{')}.{P}.{S}", "the header is not valid UTF-8 JSON"),
        (f"{b64url(bytes([0xFF]))}.{P}.{S}", "the header is not valid UTF-8 JSON"),
        (f"{b64url('[]')}.{P}.{S}", "the header is not a JSON object"),
        (f"{H}.{b64url('1')}.{S}", "the payload is not a JSON object"),
        (token(H, b64url('{"a":NaN}')), "JSON constant NaN is not allowed"),
        (token(H, b64url('{"a":-Infinity}')), "JSON constant -Infinity is not allowed"),
        (token(b64url('{"a":1,"a":1}'), P), "a JSON object has duplicate member names"),
        (token(H, b64url('{"o":{"a":1,"a":2}}')), "a JSON object has duplicate member names"),
        (f"{H}.{b64url('[' * 10_000)}.{S}", "the payload is not valid UTF-8 JSON"),
    ],
)
def test_flaws_are_refused_with_their_reason(raw: str, message: str) -> None:
    with pytest.raises(MalformedTokenError) as refused:
        parse_token(raw)
    assert refused.value.message == message


@pytest.mark.parametrize("raw", ["opaque.session", "aGVsbG8.d29ybGQ"])
def test_two_segments_are_taken_for_a_session_token(raw: str) -> None:
    with pytest.raises(OpaqueTokenError, match="looks like a Better Auth session token"):
        parse_token(raw)


def test_a_token_is_refused_by_its_length_before_it_is_read() -> None:
    with pytest.raises(MalformedTokenError) as refused:
        parse_token("." * (MAX_TOKEN_LENGTH + 1))
    assert refused.value.message == f"the token is longer than {MAX_TOKEN_LENGTH} characters"


def header_of_length(length: int) -> str:
    """An encoded header of exactly ``length`` characters (``length % 4`` must not be 1)."""
    size = length * 3 // 4  # bytes of JSON whose unpadded base64url has that length
    header = b64url({"alg": "EdDSA", "pad": "x" * (size - len('{"alg":"EdDSA","pad":""}'))})
    assert len(header) == length
    return header


def test_the_longest_header_is_accepted() -> None:
    parsed = parse_token(token(header_of_length(MAX_HEADER_LENGTH), P))
    assert parsed.header["alg"] == "EdDSA"


def test_a_longer_header_is_refused_by_its_length() -> None:
    with pytest.raises(MalformedTokenError) as refused:
        parse_token(token(header_of_length(MAX_HEADER_LENGTH + 2), P))
    assert refused.value.message == f"the header is longer than {MAX_HEADER_LENGTH} characters"


@pytest.mark.parametrize(
    ("segment", "decoded"),
    [
        ("AA", b"\x00"),
        ("AAE", b"\x00\x01"),
        ("AAEC", b"\x00\x01\x02"),
        ("-_8", b"\xfb\xff"),
    ],
)
def test_decode_segment_reads_canonical_unpadded_base64url(segment: str, decoded: bytes) -> None:
    assert decode_segment(segment, "payload") == decoded


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ("A", "the signature is not valid base64url (impossible length)"),
        ("AB", "the signature is not canonical base64url (non-zero trailing bits)"),
        ("AAB", "the signature is not canonical base64url (non-zero trailing bits)"),
    ],
)
def test_decode_segment_names_the_segment_it_refuses(segment: str, message: str) -> None:
    with pytest.raises(MalformedTokenError) as refused:
        decode_segment(segment, "signature")
    assert refused.value.message == message


# Repeated member names where a shortcut could miss them: after whitespace, behind
# escaped quotes and colons in strings, deep down, in arrays, or dropping an object.
DUPLICATES = [
    '{"a":1,"a":2}',
    '{"a" :1,"a":2}',  # whitespace before a colon
    '{"a"\t:1,"a":2}',
    '{"a"\n:1,"a":2}',
    '{"a"\r\n :1,"a":2}',
    '{"a":1, "a" : 2}',
    '{"a":"\\":x","a":2}',  # a value holding an escaped quote and a colon
    '{"a":"\\":","a":2}',
    '{"a":":","a":2}',  # a string opening with a colon
    '{"a":"{","a":2}',
    '{"o":{"a":1,"a":2}}',
    '{"o":{"p":{"a":1,"a":2}}}',
    '{"l":[{"a":1,"a":2}]}',
    '{"a":{"x":1},"a":2}',  # a whole object dropped
    '{"a":{"x":1},"a":{"y":1}}',
    '{"a":2,"o":{"a":1,"b":1,"b":2}}',
]


@pytest.mark.parametrize("payload", DUPLICATES)
def test_no_duplicate_member_passes_a_remembered_header(payload: str) -> None:
    header = fresh_header()
    parse_token(token(header, P))  # the header is remembered: the fast path
    with pytest.raises(MalformedTokenError) as refused:
        parse_token(token(header, b64url(payload)))
    assert refused.value.message == "a JSON object has duplicate member names"


@pytest.mark.parametrize(
    "payload",
    [
        '{"note":"a\\":b","n":"x :y","b":"{","c":":"}',
        '{"l":[{"a":1},{"a":2}]}',
        '{"o":{"p":{"q":1}},"r":{"q":2}}',
        '{"a" : 1, "b" :\t2}',
        "{}",
    ],
)
def test_strings_and_nesting_that_resemble_duplicates_are_decoded(payload: str) -> None:
    header = fresh_header()
    parse_token(token(header, P))
    assert parse_token(token(header, b64url(payload))).claims == json.loads(payload)


def _strict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError("duplicate")
    return dict(pairs)


NAMES = st.sampled_from(["a", "b", "", "a\\", '"', ":", '":', "{", " ", "\\u"])
SCALARS = st.one_of(st.integers(-5, 5), st.booleans(), st.none(), NAMES)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """JSON objects with few distinct names (so duplicates are common), hand-serialized
    with random whitespace around colons and commas."""

    def value(depth: int) -> str:
        kind = draw(st.sampled_from(["scalar", "object", "array"] if depth < 3 else ["scalar"]))
        if kind == "scalar":
            return json.dumps(draw(SCALARS))
        if kind == "array":
            items = [value(depth + 1) for _ in range(draw(st.integers(0, 3)))]
            return "[" + ",".join(items) + "]"
        return obj(depth + 1)

    def obj(depth: int) -> str:
        members = []
        for _ in range(draw(st.integers(0, 4))):
            before = draw(st.sampled_from(["", "", "", " ", "\t", "\n "]))
            after = draw(st.sampled_from(["", "", " "]))
            members.append(f"{json.dumps(draw(NAMES))}{before}:{after}{value(depth)}")
        return "{" + ",".join(members) + "}"

    return obj(0)


@given(json_texts())
@settings(deadline=None, database=None, max_examples=500)
def test_the_fast_path_agrees_with_a_strict_decoder(text: str) -> None:
    header = b64url({"alg": "EdDSA", "kid": "property"})
    parse_token(token(header, P))  # remembered: every example takes the fast path first
    try:
        expected = json.loads(text, object_pairs_hook=_strict)
    except ValueError:
        with pytest.raises(MalformedTokenError, match="duplicate member names"):
            parse_token(token(header, b64url(text)))
    else:
        assert parse_token(token(header, b64url(text))).claims == expected

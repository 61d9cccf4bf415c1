"""Strict parsing of compact JWS tokens, before any cryptography.

The fast path stays in C as much as it can: one ``bytes.translate`` maps
base64url onto the standard alphabet (and the characters base64url lacks onto
one no base64 has), ``binascii.a2b_base64`` in strict mode decodes and checks
each segment, and a decoder built once reads the payload. Every token of one key
has the same header, so decoded headers are remembered. Whatever the fast path
does not take (a new header, any flaw) goes to a slower pass that applies the
same rules one by one and names the precise reason. Everything that can be
refused without a key is refused here, and oversized input is refused by its
length before it is read.
"""

from __future__ import annotations

import binascii
import json
import re
from functools import partial
from typing import Any, NamedTuple, NoReturn

from .errors import MalformedTokenError, OpaqueTokenError

__all__ = ["MAX_HEADER_LENGTH", "MAX_TOKEN_LENGTH", "ParsedToken", "decode_segment", "parse_token"]

#: Longest token accepted, in characters. Better Auth's tokens are under 1 KiB.
MAX_TOKEN_LENGTH = 16 * 1024
#: Longest encoded header accepted. Better Auth's is about 80 characters.
MAX_HEADER_LENGTH = 1024

_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = str.maketrans("-_", "+/")
_PADDING = ("", "", "==", "=")
# base64url -> standard base64; "+", "/" and "=" are not base64url, so they become
# "*", which strict decoding refuses like any other foreign byte.
_URL_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")
_BYTE_PADDING = (b"", b"", b"==", b"=")


def _spare_bits_table(mask: int) -> bytes:
    """By byte value: 1 where that (standard alphabet) character has ``mask`` bits set."""
    table = bytearray(256)
    for value, character in enumerate(_ALPHABET.translate(_TO_STANDARD).encode("ascii")):
        table[character] = 1 if value & mask else 0
    return bytes(table)


# Canonical base64url: the bits a last character carries past the data must be 0.
# By segment length % 4, which last characters are not canonical (spare bits set).
_NOT_CANONICAL = (bytes(256), bytes(256), _spare_bits_table(0b1111), _spare_bits_table(0b11))


class ParsedToken(NamedTuple):
    """A compact JWS split and decoded, not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


# Builds a ParsedToken from a tuple at C speed (a named tuple's own __new__ is Python).
_parsed = partial(tuple.__new__, ParsedToken)


def _fail(message: str) -> NoReturn:
    raise MalformedTokenError(message)


def decode_segment(segment: str, name: str) -> bytes:
    """Decode one canonical, unpadded base64url segment, or raise MalformedTokenError."""
    remainder = len(segment) % 4
    if remainder == 1:
        _fail(f"the {name} is not valid base64url (impossible length)")
    standard = segment.translate(_TO_STANDARD)
    if _NOT_CANONICAL[remainder][ord(standard[-1])]:
        _fail(f"the {name} is not canonical base64url (non-zero trailing bits)")
    try:
        return binascii.a2b_base64(standard + _PADDING[remainder])
    except binascii.Error:  # pragma: no cover - the alphabet and length were checked
        _fail(f"the {name} is not valid base64url")


def _reject_constant(name: str) -> NoReturn:
    _fail(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        _fail("a JSON object has duplicate member names")
    return result


# Decoded headers by their encoded form: every token of one key has the same
# header, so most tokens skip its decoding. Only headers of strings are kept (a
# copy of one shares nothing mutable). Small; emptied when full.
_HEADERS: dict[bytes, dict[str, Any]] = {}
_MAX_HEADERS = 64

# Built once: json.loads with options builds a decoder and scanner on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_reject_constant)


def _is_unicode_text(text: str, value: object) -> bool:
    """Whether ``value``, decoded from ``text``, holds no lone surrogate (I-JSON, RFC 7493).

    UTF-8 input holds no surrogates, so only a ``\\u`` escape can make one; the
    C encoder then checks every string, member names included, in one pass.
    """
    if "\\u" not in text:
        return True
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _decode_json(raw: bytes, name: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except MalformedTokenError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        _fail(f"the {name} is not valid UTF-8 JSON")
    if type(value) is not dict:
        _fail(f"the {name} is not a JSON object")
    if not _is_unicode_text(text, value):
        _fail(f"the {name} is not Unicode text (an escaped lone surrogate; JWTs are I-JSON)")
    return value


#: Better Auth's raw session tokens: 32 letters and digits (a little latitude either way).
_SESSION_TOKEN = re.compile(r"[A-Za-z0-9]{16,128}")
#: Why a session token is refused where a JWT is expected, and the two ways out.
SESSION_TOKEN_ADVICE = (
    "this looks like a Better Auth session token, not a JWT: send the JWT from "
    "/api/auth/token or the set-auth-jwt header, or accept session tokens with "
    "accept=[BearerJWT(), SessionToken()]"
)


def _explain(token: str) -> NoReturn:
    """Name precisely why a token did not match the compact form (slow path)."""
    if not token:
        _fail("the token is empty")
    segments = token.split(".")
    if (len(segments) == 2 and all(segments)) or _SESSION_TOKEN.fullmatch(token):
        raise OpaqueTokenError(SESSION_TOKEN_ADVICE)
    if len(segments) != 3:
        _fail(f"a JWT has 3 dot-separated segments, this token has {len(segments)}")
    for name, segment in zip(("header", "payload", "signature"), segments, strict=True):
        if not segment:
            _fail(f"the {name} segment is empty")
        if "=" in segment:
            _fail(f"the {name} segment is padded; JWTs use unpadded base64url")
        if not _BASE64URL.fullmatch(segment):
            _fail(f"the {name} segment has characters outside the base64url alphabet")
    _fail("the token is not a compact JWS")  # pragma: no cover - the regex would have matched


def parse_token(token: str) -> ParsedToken:
    """Split and decode a compact JWS; raise MalformedTokenError with the reason."""
    if len(token) > MAX_TOKEN_LENGTH:
        _fail(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    if token.isascii():
        raw = token.encode("ascii")
        segments = raw.translate(_URL_TO_STANDARD).split(b".")
        if len(segments) == 3:
            header_b64, payload_b64, signature_b64 = segments
            header = _HEADERS.get(header_b64)
            if (
                header is not None
                and payload_b64
                and signature_b64
                and not _NOT_CANONICAL[len(payload_b64) & 3][payload_b64[-1]]
                and not _NOT_CANONICAL[len(signature_b64) & 3][signature_b64[-1]]
            ):
                try:
                    payload = binascii.a2b_base64(
                        payload_b64 + _BYTE_PADDING[len(payload_b64) & 3], strict_mode=True
                    )
                    signature = binascii.a2b_base64(
                        signature_b64 + _BYTE_PADDING[len(signature_b64) & 3], strict_mode=True
                    )
                    text = payload.decode("utf-8")
                    claims, end = _DECODER.raw_decode(text)
                except (ValueError, RecursionError):
                    pass  # the slow path names what is wrong
                else:
                    if end == len(text) and type(claims) is dict and _is_unicode_text(text, claims):
                        return _parsed(
                            (
                                header.copy(),  # the caller owns its header
                                claims,
                                raw[: len(header_b64) + 1 + len(payload_b64)],
                                signature,
                            )
                        )
    return _parse_precisely(token)


def _parse_precisely(token: str) -> ParsedToken:
    """The slow path: the same rules, checked one by one to name what is wrong."""
    match = _COMPACT.fullmatch(token)
    if match is None:
        _explain(token)
    header_b64, payload_b64, signature_b64 = match.groups()
    if len(header_b64) > MAX_HEADER_LENGTH:
        _fail(f"the header is longer than {MAX_HEADER_LENGTH} characters")
    header = _decode_json(decode_segment(header_b64, "header"), "header")
    claims = _decode_json(decode_segment(payload_b64, "payload"), "payload")
    signature = decode_segment(signature_b64, "signature")
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    if all(type(value) is str for value in header.values()):
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[signing_input[: len(header_b64)].translate(_URL_TO_STANDARD)] = header.copy()
    return ParsedToken(header, claims, signing_input, signature)

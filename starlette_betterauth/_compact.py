"""Strict parsing of compact JWS tokens, before any cryptography.

The fast path is one anchored regular expression (exactly three non-empty
base64url segments, nothing else), C-level base64 decoding and ``json.loads``.
Everything that can be refused without a key is refused here, cheaply and with a
precise reason, and oversized input is refused by its length before it is read.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import MalformedTokenError, OpaqueTokenError

__all__ = ["MAX_HEADER_LENGTH", "MAX_TOKEN_LENGTH", "ParsedToken", "decode_segment", "parse_token"]

#: Longest token accepted, in characters. Better Auth's tokens are under 1 KiB.
MAX_TOKEN_LENGTH = 16 * 1024
#: Longest encoded header accepted. Better Auth's is about 80 characters.
MAX_HEADER_LENGTH = 1024

_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Canonical base64url: the bits a last character carries past the data must be 0.
_SPARE_BITS = {2: 0b1111, 3: 0b11}
_LAST_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_TO_STANDARD = str.maketrans("-_", "+/")
_PADDING = ("", "", "==", "=")


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A compact JWS split and decoded, not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _fail(message: str) -> NoReturn:
    raise MalformedTokenError(message)


def decode_segment(segment: str, name: str) -> bytes:
    """Decode one canonical, unpadded base64url segment, or raise MalformedTokenError."""
    remainder = len(segment) % 4
    if remainder == 1:
        _fail(f"the {name} is not valid base64url (impossible length)")
    mask = _SPARE_BITS.get(remainder)
    if mask is not None and _LAST_VALUE[segment[-1]] & mask:
        _fail(f"the {name} is not canonical base64url (non-zero trailing bits)")
    try:
        return binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PADDING[remainder])
    except binascii.Error:  # pragma: no cover - the alphabet and length were checked
        _fail(f"the {name} is not valid base64url")


def _reject_constant(name: str) -> NoReturn:
    _fail(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        _fail("a JSON object has duplicate member names")
    return result


def _decode_json(raw: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
        )
    except MalformedTokenError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        _fail(f"the {name} is not valid UTF-8 JSON")
    if not isinstance(value, dict):
        _fail(f"the {name} is not a JSON object")
    return value


def _explain(token: str) -> NoReturn:
    """Name precisely why a token did not match the compact form (slow path)."""
    if not token:
        _fail("the token is empty")
    segments = token.split(".")
    if len(segments) == 2 and all(segments):
        raise OpaqueTokenError(
            "this looks like a Better Auth session token, not a JWT: send the JWT "
            "from /api/auth/token or the set-auth-jwt header"
        )
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
    return ParsedToken(header, claims, signing_input, signature)

"""Reading the headers that carry credentials (Authorization, Cookie) and their origin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .errors import InvalidRequestError

__all__ = [
    "MAX_AUTHORIZATION_LENGTH",
    "Presented",
    "bearer_token",
    "parse_authorization",
    "read_headers",
]

#: Longest Authorization header read; longer ones are refused unread.
MAX_AUTHORIZATION_LENGTH = 16 * 1024 + 64


class Presented(NamedTuple):
    """What a request presents: its bearer token, Cookie header and origin headers.

    ``cookie`` joins several Cookie headers with ``"; "`` (HTTP/2 may split them).
    ``origin`` and ``referer`` are the raw values, for cross-site checks.
    """

    bearer: str | None
    cookie: str | None
    origin: str | None
    referer: str | None


def parse_authorization(value: bytes) -> str:
    """Return the token of a ``Bearer`` Authorization value (scheme case-insensitive).

    Raises:
        InvalidRequestError: another scheme, no token, or an oversized value.
    """
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidRequestError("the Authorization header is too long")
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer":
        raise InvalidRequestError("the Authorization scheme is not Bearer")
    token = token.lstrip(b" ")
    if not token:
        raise InvalidRequestError("the Bearer token is empty")
    return token.decode("latin-1")


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Return the bearer token of raw ASGI headers, or None when there is no Authorization.

    Raises:
        InvalidRequestError: more than one Authorization header, or a malformed one.
    """
    return read_headers(headers).bearer


def read_headers(headers: Iterable[tuple[bytes, bytes]]) -> Presented:
    """Collect the credential-bearing headers of a request in one pass.

    ASGI servers lower-case header names; other names are compared case-insensitively.

    Raises:
        InvalidRequestError: more than one Authorization header, or a malformed one.
    """
    authorization: bytes | None = None
    cookies: list[bytes] = []
    origin = referer = None
    for name, value in headers:
        if len(name) not in _LENGTHS:
            continue
        name = name.lower()
        if name == b"authorization":
            if authorization is not None:
                raise InvalidRequestError("more than one Authorization header")
            authorization = value
        elif name == b"cookie":
            cookies.append(value)
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"referer":
            referer = value.decode("latin-1")
    return Presented(
        None if authorization is None else parse_authorization(authorization),
        b"; ".join(cookies).decode("latin-1") if cookies else None,
        origin,
        referer,
    )


_LENGTHS = frozenset({len(b"authorization"), len(b"cookie"), len(b"origin"), len(b"referer")})

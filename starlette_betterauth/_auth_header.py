"""Reading the bearer token from raw ASGI headers."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InvalidRequestError

__all__ = ["MAX_AUTHORIZATION_LENGTH", "bearer_token", "parse_authorization"]

#: Longest Authorization header read; longer ones are refused unread.
MAX_AUTHORIZATION_LENGTH = 16 * 1024 + 64


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
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization" or (len(name) == 13 and name.lower() == b"authorization"):
            if found is not None:
                raise InvalidRequestError("more than one Authorization header")
            found = value
    return None if found is None else parse_authorization(found)

"""Reading the headers that carry credentials (Authorization, DPoP, Cookie) and their origin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .errors import InvalidRequestError

__all__ = [
    "MAX_AUTHORIZATION_LENGTH",
    "MAX_DPOP_PROOF_LENGTH",
    "Presented",
    "bearer_token",
    "parse_authorization",
    "read_headers",
    "split_authorization",
]

#: Longest Authorization header read; longer ones are refused unread.
MAX_AUTHORIZATION_LENGTH = 16 * 1024 + 64
#: Longest DPoP header read (one proof JWT, its public key in the header).
MAX_DPOP_PROOF_LENGTH = 8 * 1024


class Presented(NamedTuple):
    """What a request presents: its access token, Cookie header and origin headers.

    ``bearer`` is the token of ``Authorization: Bearer``; ``dpop`` the token of
    ``Authorization: DPoP`` (RFC 9449), with ``dpop_proof`` the request's
    ``DPoP`` header; at most one of ``bearer`` and ``dpop`` is set. ``cookie``
    joins several Cookie headers with ``"; "`` (HTTP/2 may split them).
    ``origin`` and ``referer`` are the raw values, for cross-site checks.
    """

    bearer: str | None
    cookie: str | None
    origin: str | None
    referer: str | None
    dpop: str | None = None
    dpop_proof: str | None = None

    @property
    def scheme(self) -> str | None:
        """The Authorization scheme: ``"Bearer"``, ``"DPoP"``, or None without one."""
        if self.bearer is not None:
            return "Bearer"
        return "DPoP" if self.dpop is not None else None


def split_authorization(value: bytes) -> tuple[str, str]:
    """``(scheme, token)`` of a ``Bearer`` or ``DPoP`` Authorization value.

    The scheme is matched case-insensitively and returned as ``"Bearer"`` or
    ``"DPoP"``.

    Raises:
        InvalidRequestError: another scheme, no token, or an oversized value.
    """
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidRequestError("the Authorization header is too long")
    scheme, _, token = value.partition(b" ")
    scheme = scheme.lower()
    if scheme == b"bearer":
        name = "Bearer"
    elif scheme == b"dpop":
        name = "DPoP"
    else:
        raise InvalidRequestError("the Authorization scheme is not Bearer")
    token = token.lstrip(b" ")
    if not token:
        raise InvalidRequestError(f"the {name} token is empty")
    return name, token.decode("latin-1")


def parse_authorization(value: bytes) -> str:
    """Return the token of a ``Bearer`` Authorization value (scheme case-insensitive).

    Raises:
        InvalidRequestError: another scheme (DPoP included), no token, or an
            oversized value.
    """
    scheme, token = split_authorization(value)
    if scheme != "Bearer":
        raise InvalidRequestError("the Authorization scheme is not Bearer")
    return token


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Return the bearer token of raw ASGI headers, or None when there is no Authorization.

    Raises:
        InvalidRequestError: more than one Authorization header, a malformed one, or
            another scheme than Bearer (DPoP included).
    """
    presented = read_headers(headers)
    if presented.dpop is not None:
        raise InvalidRequestError("the Authorization scheme is not Bearer")
    return presented.bearer


def read_headers(headers: Iterable[tuple[bytes, bytes]]) -> Presented:
    """Collect the credential-bearing headers of a request in one pass.

    ASGI servers lower-case header names; other names are compared case-insensitively.

    Raises:
        InvalidRequestError: more than one Authorization header, or a malformed one.
    """
    authorization: bytes | None = None
    cookies: list[bytes] | None = None
    origin = referer = None
    proof: bytes | None = None
    fields = _FIELDS
    for name, value in headers:
        field = fields.get(name)
        if field is None:
            # Not a lower-case name we read: the rest of the request's headers,
            # or one of ours spelt with capitals (ASGI servers lower-case names).
            if name.islower() or len(name) not in _LENGTHS:
                continue
            field = fields.get(name.lower())
            if field is None:
                continue
        if field == _AUTHORIZATION:
            if authorization is not None:
                raise InvalidRequestError("more than one Authorization header")
            authorization = value
        elif field == _COOKIE:
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
        elif field == _ORIGIN:
            origin = value.decode("latin-1")
        elif field == _REFERER:
            referer = value.decode("latin-1")
        elif proof is not None:
            raise InvalidRequestError("more than one DPoP header")
        else:
            proof = value
    cookie = None if cookies is None else b"; ".join(cookies).decode("latin-1")
    if authorization is None:
        return _new_tuple(Presented, (None, cookie, origin, referer, None, None))
    # The common case, "Bearer <token>" as most clients spell it, in as few distinct
    # operations as can be: on a busy server each one runs with cold CPU caches.
    # Any other spelling (scheme case, extra spaces) is split_authorization's.
    if authorization[:7] == b"Bearer " and len(authorization) <= MAX_AUTHORIZATION_LENGTH:
        raw = authorization[7:]
        if raw[:1] != b" " and raw:
            return _new_tuple(
                Presented, (raw.decode("latin-1"), cookie, origin, referer, None, None)
            )
    scheme, token = split_authorization(authorization)
    if scheme == "Bearer":
        return Presented(token, cookie, origin, referer)
    if proof is not None and len(proof) > MAX_DPOP_PROOF_LENGTH:
        raise InvalidRequestError("the DPoP header is too long")
    return Presented(
        None, cookie, origin, referer, token, None if proof is None else proof.decode("latin-1")
    )


_AUTHORIZATION, _COOKIE, _ORIGIN, _REFERER, _DPOP = range(5)
# The headers read, by their lower-case names.
_FIELDS = {
    b"authorization": _AUTHORIZATION,
    b"cookie": _COOKIE,
    b"origin": _ORIGIN,
    b"referer": _REFERER,
    b"dpop": _DPOP,
}
_LENGTHS = frozenset(map(len, _FIELDS))


# Builds a Presented from a tuple of all its fields at C speed (a named tuple's
# own __new__ is Python): tuple.__new__(Presented, fields).
_new_tuple = tuple.__new__

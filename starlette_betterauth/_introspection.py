"""Token introspection (RFC 7662): asking Better Auth's OAuth provider about an opaque token.

Better Auth issues opaque access tokens (32 letters) when a client asks for no
``resource``, or when its provider runs without the jwt plugin; only the server
can tell what they grant. :class:`IntrospectionClient` asks its
``/oauth2/introspect`` endpoint with the API's client credentials, always with
``token_type_hint=access_token`` (without it Better Auth also answers
``active: true`` for a refresh token), and keeps the answers and refusals by
the caching rules of :class:`~starlette_betterauth._remote.RemoteLookup`: an
answer is kept until the token's ``exp`` or ``cache_ttl``, whichever comes first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from ._claims import MAX_NUMERIC_DATE, one_of, short_repr
from ._remote import RemoteLookup, SharedCache, freeze_json
from .errors import (
    InactiveTokenError,
    IntrospectionError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    TokenTypeError,
)

__all__ = ["IntrospectedToken", "IntrospectionClient"]

R = TypeVar("R")

_USER_AGENT = "starlette-betterauth"
_INACTIVE = (
    "the authorization server says the token is not active: expired, revoked, unknown, or "
    "issued to a client this API's credentials may not introspect"
)
#: Longest opaque token sent to the introspection endpoint.
MAX_OPAQUE_TOKEN_LENGTH = 4096


class IntrospectedToken:
    """An opaque token to introspect; ``key`` is its SHA-256, the cache key."""

    __slots__ = ("key", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.key = hashlib.sha256(b"access_token\0" + token.encode("utf-8", "replace")).digest()

    def __repr__(self) -> str:
        return f"IntrospectedToken(sha256={self.key.hex()[:12]})"


class IntrospectionClient(RemoteLookup[IntrospectedToken, R]):
    """Introspects opaque access tokens at an RFC 7662 endpoint, with caching.

    An ``active: true`` answer is checked (``token_type`` an access token's,
    ``iss`` the issuer, ``aud`` naming an accepted audience when present, ``exp``
    in the future), its claims handed to ``build`` (a machine token without
    ``sub`` gets its ``client_id`` as ``sub``), and what ``build`` returns is
    cached until ``exp`` or ``cache_ttl``. ``active: false`` raises
    :class:`InactiveTokenError` (401), cached for ``refusal_ttl`` seconds; no
    answer to be had raises :class:`IntrospectionError` (503).

    Args:
        url: the introspection endpoint (Better Auth's: ``{issuer}/oauth2/introspect``).
        client_id, client_secret: the API's client credentials
            (``client_secret_basic``).
        issuer: the ``iss`` an answer must name when it names one.
        audiences: the resource identifiers an answer's ``aud`` must name one of,
            when it has one (Better Auth's opaque tokens have none).
        build: turns the answer's claims into what is cached and returned.
        leeway: seconds of clock skew tolerated on ``exp``.
        client, cache_size, cache_ttl, refusal_ttl, timeout, max_body_size,
            retry_interval, on_event, shared: as for the get-session client; each
            lookup emits ``introspection``. A shared cache stores the answers as
            the server sent them (they hold no token) and each process checks
            them as it checks the server's.
    """

    service = "introspection"
    event = "introspection"
    unavailable = IntrospectionError

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        client_secret: str,
        issuer: str | None,
        audiences: frozenset[str] | None,
        build: Callable[[Mapping[str, Any], float | None], R],
        leeway: float = 10.0,
        client: httpx.AsyncClient | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 60.0,
        refusal_ttl: float = 5.0,
        timeout: float = 5.0,
        max_body_size: int = 64 * 1024,
        retry_interval: float = 1.0,
        on_event: Callable[[str, Mapping[str, Any]], None] | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        super().__init__(
            url,
            client=client,
            cache_size=cache_size,
            cache_ttl=cache_ttl,
            refusal_ttl=refusal_ttl,
            timeout=timeout,
            max_body_size=max_body_size,
            retry_interval=retry_interval,
            on_event=on_event,
            shared=shared,
        )
        # client_secret_basic: both halves form-encoded first (RFC 6749 section 2.3.1).
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        self._authorization = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        self.issuer = issuer
        self.audiences = audiences
        self.leeway = leeway
        self._build = build

    async def introspect(self, token: str) -> R:
        """What ``build`` made of the server's answer for ``token``.

        Raises:
            InactiveTokenError: the server says the token is not active (401).
            InvalidTokenError: the answer names another issuer, audience or token type.
            IntrospectionError: no answer can be had now (503).
        """
        if not token or len(token) > MAX_OPAQUE_TOKEN_LENGTH or not token.isascii():
            raise InactiveTokenError(
                "the bearer value cannot be an opaque access token (ASCII, at most "
                f"{MAX_OPAQUE_TOKEN_LENGTH} characters)"
            )
        return await self.lookup(IntrospectedToken(token))

    def _request(self, credential: IntrospectedToken) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.url,
            headers={
                "accept": "application/json",
                "user-agent": _USER_AGENT,
                "authorization": self._authorization,
                "cache-control": "no-store",
            },
            data={"token": credential.token, "token_type_hint": "access_token"},
            extensions={"timeout": self._timeout_extension},
        )

    def _status_hint(self, status: int) -> str:
        if status in (400, 401):
            return " (check the client_id and client_secret given to Introspection)"
        return super()._status_hint(status)

    def _parse(self, body: bytes, credential: IntrospectedToken) -> tuple[R, float]:
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise IntrospectionError("the introspection answer is not JSON") from exc
        if not isinstance(answer, dict) or type(answer.get("active")) is not bool:
            raise IntrospectionError(
                'the introspection answer is not usable: not a JSON object with a boolean "active"'
            )
        if not answer["active"]:
            raise InactiveTokenError(_INACTIVE)
        token_type = answer.get("token_type")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() not in ("bearer", "dpop")
        ):
            raise TokenTypeError(
                f"introspection says the token is of type {short_repr(token_type)}, "
                "not an access token"
            )
        iss = answer.get("iss")
        if self.issuer is not None and iss is not None and iss != self.issuer:
            raise InvalidIssuerError(
                f"introspection says iss is {short_repr(iss)} but the expected issuer is "
                f"{self.issuer!r}"
            )
        aud = answer.get("aud")
        if self.audiences is not None and aud is not None:
            named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self.audiences for a in named):
                raise InvalidAudienceError(
                    f"the token was issued for {short_repr(aud)}, not for this API "
                    f"({one_of(self.audiences)})"
                )
        exp = answer.get("exp")
        if exp is not None and (
            isinstance(exp, bool)
            or not isinstance(exp, int | float)
            or not 0 <= exp <= MAX_NUMERIC_DATE
        ):
            raise IntrospectionError("the introspection answer's exp is not a NumericDate")
        now = time.time()
        if exp is not None and now >= exp + self.leeway:
            raise InactiveTokenError("the token has expired (its introspected exp is past)")
        sub = answer.get("sub")
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise InvalidClaimError("the introspection answer's sub is not a non-empty string")
        if sub is None:
            client_id = answer.get("client_id")
            if not isinstance(client_id, str) or not client_id:
                raise InvalidClaimError("the introspection answer names no sub and no client_id")
            # A client_credentials token acts for its client: Better Auth leaves sub out.
            answer["sub"] = client_id
        answer.pop("active")
        expires_at = float(exp) if exp is not None else None
        record = self._build(freeze_json(answer), expires_at)
        return record, expires_at if expires_at is not None else now + self.cache_ttl

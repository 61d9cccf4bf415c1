"""Turning a token into verified claims. Knows nothing of ASGI."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import httpx

from ._claims import ClaimRules, short_repr
from ._compact import parse_token
from ._jwks import JWKSCache
from ._keys import VerificationKey
from ._observability import EventHook
from ._settings import (
    DEFAULT_LEEWAY,
    ResolvedSettings,
    VerifierSettings,
    check_algorithms,
    check_audiences,
    check_issuer,
    check_leeway,
    resolve_settings,
)
from .errors import (
    InvalidSignatureError,
    InvalidTokenError,
    MalformedTokenError,
    UnsupportedAlgorithmError,
)

__all__ = ["DEFAULT_LEEWAY", "TokenVerifier", "VerifiedToken"]

_MAX_KID_LENGTH = 256
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})


class VerifiedToken(NamedTuple):
    """A token whose signature and claims were verified (an immutable record).

    ``claims`` is a read-only view of the whole payload; ``exp`` is its expiry
    (None only when the verifier was told not to require it); ``key`` is the
    key of the key set that verified the signature. A named tuple
    rather than a frozen dataclass: one is built per verification, and a
    frozen dataclass takes several times longer to build.
    """

    claims: Mapping[str, Any]
    header: Mapping[str, Any]
    kid: str
    alg: str
    exp: float | None
    key: VerificationKey


class TokenVerifier:
    """Verifies Better Auth JWTs against a cached key set: token in, claims out.

    Usable without ASGI (command line, background jobs, tests)::

        verifier = TokenVerifier.for_server("https://auth.example.com")
        claims = await verifier.verify(token)   # raises InvalidTokenError subclasses

    Args:
        jwks: the key-set cache to take keys from.
        issuer: the exact ``iss`` required, or None to skip the check (not advised).
        audience: accepted audience(s); ``aud`` must name at least one. None skips.
        algorithms: accepted algorithms, a subset of EdDSA, ES256, ES512, RS256, PS256.
        leeway: seconds of clock skew tolerated on exp, nbf and iat, 0 to 300.
        require_exp: refuse tokens without ``exp`` (the default; an opt-out exists).
        require_sub: refuse tokens without a non-empty string ``sub``.
        typ: the header ``typ`` required (e.g. Better Auth's session cookie cache,
            ``"better-auth.session-cache+jwt"``); by default ``typ`` may be absent,
            ``JWT`` or ``at+jwt``.
    """

    def __init__(
        self,
        jwks: JWKSCache,
        *,
        issuer: str | None,
        audience: str | Iterable[str] | None,
        algorithms: Sequence[str] | None = None,
        leeway: float = DEFAULT_LEEWAY,
        require_exp: bool = True,
        require_sub: bool = True,
        typ: str | None = None,
    ) -> None:
        self.jwks = jwks
        self.typ = typ.lower() if typ is not None else None
        self.algorithms = (
            check_algorithms(algorithms) if algorithms is not None else jwks.algorithms
        )
        self.rules = ClaimRules(
            issuer=check_issuer(issuer) if issuer is not None else None,
            audiences=check_audiences(audience) if audience is not None else None,
            leeway=check_leeway(leeway),
            require_exp=require_exp,
            require_sub=require_sub,
        )

    @classmethod
    def for_server(
        cls,
        base_url: str | None = None,
        /,
        *,
        http_client: httpx.AsyncClient | None = None,
        on_event: EventHook | None = None,
        **settings: Unpack[VerifierSettings],
    ) -> TokenVerifier:
        """Build a verifier the way Better Auth's defaults lay a server out.

        ``jwks_url`` defaults to ``{base_url}/api/auth/jwks`` and ``issuer`` and
        ``audience`` to ``base_url``; with no ``base_url`` and no ``jwks_url``,
        ``BETTER_AUTH_URL`` is read from the environment. The settings are those
        of the middleware (:class:`~starlette_betterauth.VerifierSettings`).

        Example::

            verifier = TokenVerifier.for_server(
                "https://auth.example.com", key_set=KeySetOptions(ttl=600)
            )
            try:
                claims = await verifier.verify(token)
            finally:
                await verifier.aclose()

        Args:
            base_url: Better Auth's ``baseURL`` (also accepted as a keyword).
            http_client: an ``httpx.AsyncClient`` for key-set fetches.
            on_event: the key-set cache's ``jwks_*`` event hook.

        Raises:
            ConfigurationError: nothing to locate the server by, or a bad setting.
        """
        if base_url is not None:
            settings["base_url"] = base_url
        return cls.from_settings(
            resolve_settings(settings), http_client=http_client, on_event=on_event
        )

    @classmethod
    def from_settings(
        cls,
        settings: ResolvedSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        on_event: EventHook | None = None,
    ) -> TokenVerifier:
        """Build a verifier, and its key-set cache, from resolved settings."""
        cache = JWKSCache(
            settings.jwks_url,
            client=http_client,
            algorithms=settings.algorithms,
            options=settings.key_set,
            on_event=on_event,
        )
        return cls(
            cache,
            issuer=settings.issuer,
            audience=settings.audiences,
            leeway=settings.leeway,
            require_exp=settings.require_exp,
        )

    async def aclose(self) -> None:
        """Close the key-set cache's HTTP client, if the cache created it."""
        await self.jwks.aclose()

    async def verify(self, token: str) -> Mapping[str, Any]:
        """Verify ``token`` and return its claims as a read-only mapping.

        Raises:
            InvalidTokenError: (a subclass naming the reason) the token is refused.
            KeySetError: no usable key set can be had; retry later.
        """
        return (await self.verify_token(token)).claims

    async def verify_token(self, token: str) -> VerifiedToken:
        """Like :meth:`verify`, returning the header, kid, alg and exp too."""
        header, claims, signing_input, signature = parse_token(token)
        alg = header.get("alg")
        if type(alg) is not str or alg not in self.algorithms:
            raise UnsupportedAlgorithmError(
                f"the token's alg {short_repr(alg)} is not accepted "
                f"(accepted: {', '.join(sorted(self.algorithms))})"
            )
        kid = header.get("kid")
        if type(kid) is not str or not 0 < len(kid) <= _MAX_KID_LENGTH:
            raise MalformedTokenError("the token header has no usable kid")
        if self.typ is not None:
            typ = header.get("typ")
            if type(typ) is not str or typ.lower() != self.typ:
                raise InvalidTokenError(f"the token's typ {short_repr(typ)} is not {self.typ!r}")
        if len(header) > 2:
            _check_extra_header(header, self.typ is None)
        # A loaded, fresh key set answers without I/O; anything else goes through get_key.
        key = self.jwks.current_key(kid)
        if key is None:
            key = await self.jwks.get_key(kid)
        if alg not in key.algorithms:
            raise UnsupportedAlgorithmError(
                f"the token's alg {alg} is not the algorithm of key {kid!r} "
                f"({', '.join(sorted(key.algorithms))})"
            )
        # The key verifies exactly this alg (checked above): its prepared check.
        if not key.check(signing_input, signature):
            raise InvalidSignatureError("the token's signature does not verify")
        exp = self.rules.check(claims, time.time())
        return _verified_token(
            (MappingProxyType(claims), MappingProxyType(header), kid, alg, exp, key)
        )


# Builds a VerifiedToken from a tuple at C speed (a named tuple's own __new__ is Python).
_verified_token = partial(tuple.__new__, VerifiedToken)


def _check_extra_header(header: Mapping[str, Any], check_typ: bool) -> None:
    if "crit" in header:
        raise MalformedTokenError("the token header has a crit member this verifier cannot honour")
    if "b64" in header and header["b64"] is not True:
        raise MalformedTokenError("unencoded payloads (b64) are not accepted")
    typ = header.get("typ")
    if check_typ and typ is not None and (type(typ) is not str or typ.lower() not in _ACCEPTED_TYP):
        raise InvalidTokenError(f"the token's typ {short_repr(typ)} is not a JWT type")

"""The kinds of Better Auth credentials the middleware accepts: *what* authenticates.

Pass them to :class:`~starlette_betterauth.BetterAuthMiddleware` in the order
they are tried::

    from starlette_betterauth.credentials import BearerJWT, SessionCookie, SessionToken

    app.add_middleware(
        BetterAuthMiddleware,
        base_url="https://auth.example.com",
        accept=[SessionCookie(), SessionToken(), BearerJWT()],
    )

Each kind finds its credential in the request (the ``Authorization`` header, the
Cookie header) and turns it into the same :class:`~starlette_betterauth.BetterAuthUser`.
The first kind whose credential is present decides, and a presented credential
that fails is refused, never skipped to anonymous. A bearer value belongs to the
kind its shape names: three dot-separated segments are a JWT, one or two a
session token; when only one bearer kind is accepted it answers for every
bearer value (so a session token sent where only JWTs are accepted is refused
with a reason that says so).

The middleware owns *where* this runs (the request, the refusals, the scope);
the kinds share its key-set cache, settings and HTTP client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import httpx

from ._headers import Presented
from ._observability import EventHook
from ._origins import TrustedOrigins
from ._settings import ResolvedSettings
from ._token_cache import TokenCache
from ._user import BetterAuthUser, UserBuilder
from ._verifier import TokenVerifier
from .errors import ConfigurationError

__all__ = ["Authenticator", "BearerJWT", "Context", "Credential", "Principal", "bind_kinds"]

#: A verified caller and the credential scopes Starlette's ``request.auth`` gets.
Principal = tuple[BetterAuthUser, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Context:
    """What the middleware shares with every kind it accepts (built once)."""

    settings: ResolvedSettings | None
    verifier: TokenVerifier
    users: UserBuilder
    #: The verified-result cache shared by the kinds that verify locally.
    cache: TokenCache[Principal]
    http_client: httpx.AsyncClient | None
    on_event: EventHook | None
    #: True when this kind is the only bearer kind accepted: it answers for every bearer value.
    sole_bearer: bool = True


class Authenticator(Protocol):
    """A kind bound to one middleware: finds its credential and verifies it."""

    #: The ``kind`` given to users it authenticates.
    kind: str
    #: For a credential the browser sends on its own (a cookie): the origins whose
    #: pages may use it for unsafe requests. None for credentials a page must attach.
    origins: TrustedOrigins | None

    def find(self, presented: Presented) -> str | None:
        """The credential this kind reads from the request, or None when it is absent."""

    def cached(self, credential: str) -> Principal | None:
        """The principal remembered for ``credential``, without I/O; None when not known."""

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        """Verify ``credential``; raise a :class:`~starlette_betterauth.errors.BetterAuthError`."""

    async def aclose(self) -> None:
        """Release what the kind opened (HTTP clients)."""


class Credential(ABC):
    """A kind of credential the middleware accepts (``accept=[...]``)."""

    #: The kind of credential read: ``"bearer"`` (the Authorization header) or ``"cookie"``.
    source: str = "bearer"

    @abstractmethod
    def bind(self, context: Context) -> Authenticator:
        """Bind the kind to one middleware's shared machinery."""


@dataclass(frozen=True, slots=True)
class BearerJWT(Credential):
    """JWTs of Better Auth's jwt plugin in ``Authorization: Bearer``: the default kind.

    Verified locally against the server's cached key set, with the
    middleware's verification settings (issuer, audience, algorithms, leeway).
    A verified token is remembered (``token_cache_size``, ``token_cache_ttl``)
    until its ``exp``, and only while the key that signed it is still in the key set.

    Example::

        app.add_middleware(BetterAuthMiddleware, base_url=..., accept=[BearerJWT()])
    """

    def bind(self, context: Context) -> Authenticator:
        """Bind to the middleware's verifier and token cache settings."""
        return _BearerJWTAuthenticator(context)


class _BearerJWTAuthenticator:
    kind = "jwt"
    origins: TrustedOrigins | None = None

    def __init__(self, context: Context) -> None:
        self._verifier = context.verifier
        self._users = context.users
        self._sole = context.sole_bearer
        self._cache = context.cache

    def find(self, presented: Presented) -> str | None:
        token = presented.bearer
        if token is None or (not self._sole and token.count(".") != 2):
            return None
        return token

    def cached(self, credential: str) -> Principal | None:
        return self._cache.get(credential)

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        verified = await self._verifier.verify_token(credential)
        principal = self._users.build(verified.claims, kind="jwt", expires_at=verified.exp)
        self._cache.put(credential, principal, verified.kid, verified.exp)
        return principal

    async def aclose(self) -> None:
        return None


def bind_kinds(accept: Sequence[Credential] | None, context: Context) -> tuple[Authenticator, ...]:
    """Bind the accepted kinds in order (``[BearerJWT()]`` when None).

    Raises:
        ConfigurationError: an empty list, something that is not a kind, or a kind twice.
    """
    kinds = [BearerJWT()] if accept is None else list(accept)
    if not kinds:
        raise ConfigurationError("accept needs at least one credential kind, e.g. [BearerJWT()]")
    seen: set[type[Credential]] = set()
    for kind in kinds:
        if not isinstance(kind, Credential):
            raise ConfigurationError(
                f"accept takes credential kinds such as BearerJWT() or SessionCookie(), "
                f"got {kind!r}"
            )
        if type(kind) in seen:
            raise ConfigurationError(f"accept lists {type(kind).__name__} twice")
        seen.add(type(kind))
    sole_bearer = sum(kind.source == "bearer" for kind in kinds) == 1
    return tuple(kind.bind(replace(context, sole_bearer=sole_bearer)) for kind in kinds)

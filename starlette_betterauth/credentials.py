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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol

import httpx

from ._cookies import (
    DEFAULT_COOKIE_PREFIX,
    CookieNames,
    SessionCookies,
    find_session_cookies,
    parse_cookies,
)
from ._headers import Presented
from ._observability import EventHook
from ._origins import TrustedOrigins
from ._sessions import SessionClient, SessionCredential, SessionRecord, session_expiry
from ._settings import ResolvedSettings
from ._token_cache import TokenCache
from ._user import BetterAuthUser, UserBuilder
from ._verifier import TokenVerifier
from .errors import ConfigurationError, ExpiredTokenError, InvalidSessionError

__all__ = [
    "Authenticator",
    "BearerJWT",
    "Context",
    "Credential",
    "Principal",
    "SessionCookie",
    "SessionToken",
    "bind_kinds",
]

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
    #: get-session clients by their settings, shared by the session kinds of one middleware.
    session_clients: dict[tuple[object, ...], SessionClient] = field(default_factory=dict)


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
    source: ClassVar[str] = "bearer"

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
        self._cache.put(credential, principal, verified.key, verified.exp)
        return principal

    async def aclose(self) -> None:
        return None


#: Where get-session lives under Better Auth's default basePath.
GET_SESSION_PATH = "/api/auth/get-session"
#: The ``aud`` and header ``typ`` of Better Auth's JWKS-signed session cookie cache.
SESSION_CACHE_AUDIENCE = "better-auth:session-cache"
SESSION_CACHE_TYP = "better-auth.session-cache+jwt"


@dataclass(frozen=True, slots=True, kw_only=True)
class _SessionLookup(Credential):
    """Settings of the kinds that may ask Better Auth's get-session."""

    get_session_url: str | None = None
    cache_ttl: float = 60.0
    cache_size: int = 10_000
    refusal_ttl: float = 5.0
    timeout: float = 5.0

    def _client(self, context: Context) -> SessionClient:
        """The middleware's get-session client for these settings, shared by the kinds
        that name the same (one HTTP pool, one cache, one back-off after a failure)."""
        url = self.get_session_url
        if url is None:
            base_url = context.settings.base_url if context.settings is not None else None
            if base_url is None:
                raise ConfigurationError(
                    f"{type(self).__name__} needs get_session_url= (or the middleware's "
                    "base_url=) to find Better Auth's get-session"
                )
            url = base_url + GET_SESSION_PATH
        settings = (url, self.cache_size, self.cache_ttl, self.refusal_ttl, self.timeout)
        client = context.session_clients.get(settings)
        if client is None:
            client = SessionClient(
                url,
                cache_size=self.cache_size,
                cache_ttl=self.cache_ttl,
                refusal_ttl=self.refusal_ttl,
                timeout=self.timeout,
                on_event=context.on_event,
            )
            context.session_clients[settings] = client
        return client


def _session_principal(users: UserBuilder, record: SessionRecord, kind: str) -> Principal:
    claims = {**record.user, "sub": record.user_id}
    return users.build(
        claims, kind=kind, session_id=record.session_id, expires_at=record.expires_at
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionToken(_SessionLookup):
    """Better Auth's opaque session tokens in ``Authorization: Bearer`` (bearer plugin).

    The token sign-in returns (raw, 32 characters) or the signed form of the
    ``set-auth-token`` header (``<token>.<signature>``). Only the server can
    check one: each new token costs one get-session call (one in flight however
    many requests carry it), and the answer is remembered for ``cache_ttl``
    seconds at most and never past the session's expiry, so a sign-out, a
    revoked session or a ban is seen within ``cache_ttl`` seconds.

    Args:
        get_session_url: get-session's URL (default ``{base_url}/api/auth/get-session``).
        cache_ttl: seconds an answer is remembered at most (0: ask every time).
        cache_size: answers remembered at most.
        refusal_ttl: seconds a refused token is remembered.
        timeout: seconds a get-session call may take.

    Example::

        app.add_middleware(
            BetterAuthMiddleware, base_url=..., accept=[BearerJWT(), SessionToken()]
        )
    """

    def bind(self, context: Context) -> Authenticator:
        """Bind to a get-session client of its own."""
        return _SessionTokenAuthenticator(self._client(context), context)


class _SessionTokenAuthenticator:
    kind = "session_token"
    origins: TrustedOrigins | None = None

    def __init__(self, sessions: SessionClient, context: Context) -> None:
        self.sessions = sessions
        self._users = context.users
        self._sole = context.sole_bearer

    def find(self, presented: Presented) -> str | None:
        token = presented.bearer
        if token is None or (not self._sole and token.count(".") > 1):
            return None
        return token

    def cached(self, credential: str) -> Principal | None:
        return None  # the get-session client answers repeated tokens from its cache

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        record = await self.sessions.lookup(SessionCredential.bearer(credential))
        return _session_principal(self._users, record, self.kind)

    async def aclose(self) -> None:
        await self.sessions.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCookie(_SessionLookup):
    """Better Auth's browser session cookies, for an API on the same site as its front end.

    With Better Auth's cookie cache signed by the jwt plugin's keys
    (``session.cookieCache: { enabled: true, strategy: "jwt" }`` and
    ``jwt({ sessionCookieCache: true })``, Better Auth 1.7), the
    ``session_data`` cookie is verified locally against the cached key set: no
    network call per request (its ``typ``, ``aud``, ``iss``, ``exp``, and its
    ``sid`` against the ``session_token`` cookie when both are sent; chunked
    cookies are joined). Without it, or once it has expired, the
    ``session_token`` cookie is checked with get-session, sending that one
    cookie and nothing else of the request.

    A cookie is sent by the browser on its own, so unsafe requests (POST, PUT,
    PATCH, DELETE, ...) and websocket handshakes it authenticates must come
    from a trusted origin (``Origin``, else ``Referer``): otherwise 403.

    Args:
        cookie_prefix: Better Auth's ``advanced.cookiePrefix`` (``__Secure-``
            names are found too).
        trusted_origins: origins whose pages may send unsafe cookie requests
            (default: the base URL's origin).
        local: verify the JWKS-signed ``session_data`` cookie locally when present.
        get_session_url, cache_ttl, cache_size, refusal_ttl, timeout: as for
            :class:`SessionToken`, for the ``session_token`` cookie.

    Example::

        app.add_middleware(
            BetterAuthMiddleware,
            base_url="https://example.com",
            accept=[SessionCookie(trusted_origins=["https://app.example.com"])],
        )
    """

    source: ClassVar[str] = "cookie"
    cookie_prefix: str = DEFAULT_COOKIE_PREFIX
    trusted_origins: Sequence[str] | None = None
    local: bool = True

    def bind(self, context: Context) -> Authenticator:
        """Bind to the middleware's key set, token cache and a get-session client."""
        origins = self.trusted_origins
        if origins is None:
            base_url = context.settings.base_url if context.settings is not None else None
            if base_url is None:
                raise ConfigurationError(
                    "SessionCookie needs trusted_origins= (or the middleware's base_url=)"
                )
            origins = [base_url]
        elif isinstance(origins, str):
            raise ConfigurationError(f"trusted_origins takes a list of origins, e.g. [{origins!r}]")
        return _SessionCookieAuthenticator(
            self,
            CookieNames.for_prefix(self.cookie_prefix),
            TrustedOrigins(origins),
            self._client(context),
            context,
        )


def _cookie_credential(found: SessionCookies) -> str:
    """The credential :class:`SessionCookie` finds: the key of its cache and of its log
    fingerprint (the command line shows the same fingerprint)."""
    # One string; both halves are needed again to verify (the cookie cache must
    # belong to the session).
    return f"{found.data or ''}\0{found.token_name or ''}\0{found.token_value or ''}"


class _SessionCookieAuthenticator:
    kind = "session_cookie"

    def __init__(
        self,
        settings: SessionCookie,
        names: CookieNames,
        origins: TrustedOrigins,
        sessions: SessionClient,
        context: Context,
    ) -> None:
        self.names = names
        self.origins: TrustedOrigins | None = origins
        self.sessions = sessions
        self._users = context.users
        self._cache = context.cache
        verifier = context.verifier
        self._local = settings.local
        issuer = verifier.rules.issuer
        base_url = context.settings.base_url if context.settings is not None else None
        if issuer is not None and base_url is not None:
            # Better Auth signs its cookie cache with iss = its baseURL, whatever
            # jwt.issuer gives its JWTs.
            issuer = base_url
        self._verifier = TokenVerifier(
            verifier.jwks,
            issuer=issuer,
            audience=SESSION_CACHE_AUDIENCE,
            algorithms=sorted(verifier.algorithms),
            leeway=verifier.rules.leeway,
            typ=SESSION_CACHE_TYP,
        )

    def find(self, presented: Presented) -> str | None:
        if presented.cookie is None:
            return None
        found = find_session_cookies(parse_cookies(presented.cookie), self.names)
        if not found.present:
            return None
        return _cookie_credential(found)

    def cached(self, credential: str) -> Principal | None:
        return self._cache.get(credential)

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        data, token_name, token_value = credential.split("\0")
        if data and self._local:
            try:
                return await self._verify_locally(credential, data, token_value)
            except ExpiredTokenError:
                if not token_value:
                    raise
                # An expired cookie cache is routine: the browser refreshes it
                # through get-session, and so does this check.
        if not token_value:
            raise InvalidSessionError(
                "only a session_data cookie was sent, and it cannot be verified here "
                "(send the session_token cookie too)"
            )
        record = await self.sessions.lookup(SessionCredential.cookie(token_name, token_value))
        return _session_principal(self._users, record, self.kind)

    async def _verify_locally(self, credential: str, data: str, token_value: str) -> Principal:
        verified = await self._verifier.verify_token(data)
        claims = verified.claims
        session, user = claims.get("session"), claims.get("user")
        if not isinstance(session, Mapping) or not isinstance(user, Mapping):
            raise InvalidSessionError("the session_data cookie holds no session and user")
        sid = claims.get("sid")
        if type(sid) is not str or (token_value and token_value.partition(".")[0] != sid):
            raise InvalidSessionError(
                "the session_data cookie belongs to another session than the session_token"
            )
        if (
            user.get("id") != claims["sub"]
            or session.get("userId", claims["sub"]) != claims["sub"]
            or session.get("token", sid) != sid
        ):
            raise InvalidSessionError("the session_data cookie's sid and sub do not match it")
        session_id = session.get("id")
        principal = self._users.build(
            {**user, "sub": claims["sub"]},
            kind=self.kind,
            session_id=session_id if type(session_id) is str else None,
            expires_at=session_expiry(session.get("expiresAt")),
        )
        self._cache.put(credential, principal, verified.key, verified.exp)
        return principal

    async def aclose(self) -> None:
        await self.sessions.aclose()


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

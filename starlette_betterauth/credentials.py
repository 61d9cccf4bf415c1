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
with a reason that says so). With both :class:`BearerJWT` and
:class:`AccessToken`, a JWT whose header says ``typ: at+jwt`` is an access
token and any other a session JWT; a one-segment value goes to
:class:`AccessToken` only when it checks opaque tokens by introspection.

A token bound to a DPoP key (``cnf``) is never accepted as a Bearer token, by
any kind; ``Authorization: DPoP`` is read by :class:`AccessToken` only.

The middleware owns *where* this runs (the request, the refusals, the scope);
the kinds share its key-set cache, settings and HTTP client.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol

import httpx

from ._access_tokens import AccessTokenAuthenticator, id_token_error, is_access_token
from ._compact import decode_segment
from ._cookies import (
    DEFAULT_COOKIE_PREFIX,
    CookieNames,
    SessionCookies,
    find_session_cookies,
    parse_cookies,
)
from ._dpop import DEFAULT_DPOP_MAX_AGE, DPoPVerifier
from ._fleet import Revocations, SharedAnswers, StoredSessions
from ._headers import Presented
from ._metadata import ResourceMetadata
from ._observability import EventHook
from ._origins import TrustedOrigins
from ._redis import RedisLink
from ._sessions import SessionClient, SessionCredential, SessionRecord, session_expiry
from ._settings import RedisStore, ResolvedSettings, _check_seconds
from ._token_cache import TokenCache
from ._user import BetterAuthUser, UserBuilder
from ._verifier import TokenVerifier
from .errors import (
    ConfigurationError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidSessionError,
    MalformedTokenError,
)

__all__ = [
    "AccessToken",
    "Authenticator",
    "BearerJWT",
    "Context",
    "Credential",
    "Introspection",
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
    #: Every kind accepted, in order: a kind reads only the bearer values the others leave.
    kinds: tuple[Credential, ...] = ()


class Authenticator(Protocol):
    """A kind bound to one middleware: finds its credential and verifies it."""

    #: The ``kind`` given to users it authenticates.
    kind: str
    #: For a credential the browser sends on its own (a cookie): the origins whose
    #: pages may use it for unsafe requests. None for credentials a page must attach.
    origins: TrustedOrigins | None
    #: The proof checker when the kind takes ``Authorization: DPoP``, else None.
    dpop: DPoPVerifier | None
    #: Protected resource metadata documents (RFC 9728) the middleware serves.
    metadata: tuple[ResourceMetadata, ...]

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


@dataclass(frozen=True, slots=True, kw_only=True)
class BearerJWT(Credential):
    """JWTs of Better Auth's jwt plugin in ``Authorization: Bearer``: the default kind.

    Verified locally against the server's cached key set, with the
    middleware's verification settings (issuer, audience, algorithms, leeway).
    A verified token is remembered (``token_cache_size``, ``token_cache_ttl``)
    until its ``exp``, and only while the key that signed it is still in the key set.

    With ``redis=`` (a :class:`~starlette_betterauth.RedisStore` Better Auth
    writes as its ``secondaryStorage``), revoked tokens are refused too: those
    issued before their user's ``revoked-sessions-before-<userId>`` mark (a
    ban, "revoke sessions"), and those whose ``sid`` claim names a session that
    was signed out. One Redis round trip checks a user and ``sid``; the verdict
    is remembered ``revocation_ttl`` seconds, which bounds how late a
    revocation is seen.

    Args:
        redis: the Redis of Better Auth's ``secondaryStorage``.
        revocation_ttl: seconds a revocation check is remembered (0: every request).

    Example::

        app.add_middleware(BetterAuthMiddleware, base_url=..., accept=[BearerJWT()])
    """

    redis: RedisStore | None = None
    revocation_ttl: float = 1.0

    def bind(self, context: Context) -> Authenticator:
        """Bind to the middleware's verifier and token cache settings."""
        revocations = None
        if self.redis is not None:
            if not self.redis.secondary_storage:
                raise ConfigurationError(
                    "BearerJWT(redis=...) reads the revocations Better Auth writes to its "
                    "secondaryStorage: give it a RedisStore with secondary_storage=True"
                )
            _check_seconds("revocation_ttl", self.revocation_ttl, positive=False)
            revocations = Revocations(RedisLink(self.redis), ttl=self.revocation_ttl)
        return _BearerJWTAuthenticator(context, revocations)


class _BearerJWTAuthenticator:
    kind = "jwt"
    origins: TrustedOrigins | None = None
    dpop: DPoPVerifier | None = None
    metadata: tuple[ResourceMetadata, ...] = ()
    cached: Callable[[str], Principal | None]

    def __init__(self, context: Context, revocations: Revocations | None = None) -> None:
        self._verifier = context.verifier
        self._users = context.users
        self._sole = context.sole_bearer
        self._cache = context.cache
        # With AccessToken accepted too, access tokens (typ at+jwt) are its own.
        self._leave_access_tokens = any(isinstance(k, AccessToken) for k in context.kinds)
        self.revocations = revocations
        # Without revocation marks, a repeated token is the token cache's own lookup.
        self.cached = context.cache.get if revocations is None else self._cached_unrevoked

    def find(self, presented: Presented) -> str | None:
        token = presented.bearer
        if token is None or (not self._sole and token.count(".") != 2):
            return None
        if self._leave_access_tokens and is_access_token(token):
            return None
        return token

    def _cached_unrevoked(self, credential: str) -> Principal | None:
        principal = self._cache.get(credential)
        revocations = self.revocations
        if (
            principal is not None
            and revocations is not None
            and not revocations.passed(principal[0])
        ):
            return None  # verified, but its revocation check is due
        return principal

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        principal = self._cache.get(credential) if self.revocations is not None else None
        if principal is None:
            try:
                verified = await self._verifier.verify_token(credential)
            except InvalidClaimError as exc:
                # Next to AccessToken, the provider's ID tokens come this way (no typ): say so.
                explained = id_token_error(credential) if self._leave_access_tokens else None
                if explained is not None:
                    raise explained from exc
                raise
            principal = self._users.build(verified.claims, kind="jwt", expires_at=verified.exp)
            self._cache.put(credential, principal, verified.key, verified.exp)
        if self.revocations is not None:
            await self.revocations.check(principal[0])
        return principal

    async def aclose(self) -> None:
        if self.revocations is not None:
            await self.revocations.link.aclose()


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
    redis: RedisStore | None = None

    def _lookups(self, context: Context) -> SessionClient | StoredSessions:
        """Where sessions are looked up: get-session, or Better Auth's secondaryStorage."""
        store = self.redis
        if store is None or not store.secondary_storage:
            return self._client(context)
        fallback = self._client(context) if store.on_error == "fallback" else None
        return StoredSessions(RedisLink(store), fallback, on_event=context.on_event)

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
        settings = (
            url,
            self.cache_size,
            self.cache_ttl,
            self.refusal_ttl,
            self.timeout,
            self.redis,
        )
        client = context.session_clients.get(settings)
        if client is None:
            shared = None
            if self.redis is not None and not self.redis.secondary_storage:
                shared = SharedAnswers.for_lookup(
                    self.redis,
                    cache_ttl=self.cache_ttl,
                    refusal_ttl=self.refusal_ttl,
                    timeout=self.timeout,
                )
            client = SessionClient(
                url,
                cache_size=self.cache_size,
                cache_ttl=self.cache_ttl,
                refusal_ttl=self.refusal_ttl,
                timeout=self.timeout,
                on_event=context.on_event,
                shared=shared,
            )
            context.session_clients[settings] = client
        return client


def signed_with_secret(data: str) -> bool:
    """Whether a ``session_data`` value is of a strategy signed with Better Auth's secret.

    ``compact`` (base64url JSON, no dot), ``jwe`` (five segments) and the HS256
    ``jwt`` strategy: only the server can check those. Anything else is taken
    for the JWKS-signed cookie cache, and verified (so a broken one is refused).
    """
    dots = data.count(".")
    if dots in (0, 4):
        return True
    if dots != 2:
        return False
    encoded = data[: data.find(".")]
    known = _HS256_HEADERS.get(encoded)
    if known is not None:
        return known
    try:
        header = json.loads(decode_segment(encoded, "header"))
    except (MalformedTokenError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    hs256 = isinstance(header, dict) and header.get("alg") == "HS256"
    if len(_HS256_HEADERS) >= _MAX_HS256_HEADERS:
        _HS256_HEADERS.clear()
    _HS256_HEADERS[encoded] = hs256
    return hs256


# Whether each encoded header met names HS256: every cookie of one key has the
# same header, so it is decoded once. Small; emptied when full.
_HS256_HEADERS: dict[str, bool] = {}
_MAX_HS256_HEADERS = 64


def _session_principal(users: UserBuilder, record: SessionRecord, kind: str) -> Principal:
    claims = {**record.user, "sub": record.user_id}
    return users.build(
        claims, kind=kind, session_id=record.session_id, expires_at=record.expires_at
    )


class _SessionPrincipals:
    """The user built for each session answer held in a cache: a cache hit builds none.

    Keyed on the answer's identity (the answer is held too, so its id is not reused);
    bounded, cleared when full.
    """

    __slots__ = ("_built", "_kind", "_users")

    _LIMIT = 10_000

    def __init__(self, users: UserBuilder, kind: str) -> None:
        self._users = users
        self._kind = kind
        self._built: dict[int, tuple[SessionRecord, Principal]] = {}

    def of(self, record: SessionRecord) -> Principal:
        entry = self._built.get(id(record))
        if entry is not None and entry[0] is record:
            return entry[1]
        principal = _session_principal(self._users, record, self._kind)
        if len(self._built) >= self._LIMIT:
            self._built.clear()
        self._built[id(record)] = (record, principal)
        return principal


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
        redis: a :class:`~starlette_betterauth.RedisStore`. Better Auth's
            ``secondaryStorage`` (``secondary_storage=True``): each token is
            checked with one Redis round trip instead of get-session, and a
            sign-out, revocation or ban is seen at once (the cache settings
            then apply to the get-session fallback only). Otherwise a cache of
            get-session answers shared by every process, one call across the
            fleet per new token.

    Example::

        app.add_middleware(
            BetterAuthMiddleware, base_url=..., accept=[BearerJWT(), SessionToken()]
        )
    """

    def bind(self, context: Context) -> Authenticator:
        """Bind to a get-session client of its own."""
        return _SessionTokenAuthenticator(self._lookups(context), context)


class _SessionTokenAuthenticator:
    kind = "session_token"
    origins: TrustedOrigins | None = None
    dpop: DPoPVerifier | None = None
    metadata: tuple[ResourceMetadata, ...] = ()

    def __init__(self, sessions: SessionClient | StoredSessions, context: Context) -> None:
        self.sessions = sessions
        self._users = context.users
        self._principals = _SessionPrincipals(context.users, self.kind)
        self._sole = context.sole_bearer
        # Opaque access tokens with their prefix belong to AccessToken.
        self._leave = tuple(
            k.opaque_prefix
            for k in context.kinds
            if isinstance(k, AccessToken) and k.introspection is not None and k.opaque_prefix
        )

    def find(self, presented: Presented) -> str | None:
        token = presented.bearer
        if token is None or (not self._sole and token.count(".") > 1):
            return None
        if self._leave and token.startswith(self._leave):
            return None
        return token

    def cached(self, credential: str) -> Principal | None:
        return None  # the get-session client answers repeated tokens from its cache

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        record = await self.sessions.lookup(SessionCredential.bearer(credential))
        return self._principals.of(record)

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
        get_session_url, cache_ttl, cache_size, refusal_ttl, timeout, redis: as
            for :class:`SessionToken`, for the ``session_token`` cookie. With
            Better Auth's ``secondaryStorage`` the ``session_token`` cookie is
            checked there, and the ``session_data`` cookie is not used.

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
            self._lookups(context),
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
    dpop: DPoPVerifier | None = None
    metadata: tuple[ResourceMetadata, ...] = ()

    def __init__(
        self,
        settings: SessionCookie,
        names: CookieNames,
        origins: TrustedOrigins,
        sessions: SessionClient | StoredSessions,
        context: Context,
    ) -> None:
        self.names = names
        self.origins: TrustedOrigins | None = origins
        self.sessions = sessions
        self._users = context.users
        self._principals = _SessionPrincipals(context.users, self.kind)
        self._cache = context.cache
        verifier = context.verifier
        # Better Auth's secondaryStorage answers for the session_token at once;
        # the cookie cache would keep a signed-out session for its lifetime.
        self._local = settings.local and not isinstance(sessions, StoredSessions)
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
        # A cookie cache signed with the secret (the compact, jwe and HS256 jwt
        # strategies) cannot be checked here: the session_token cookie can.
        if data and self._local and not (token_value and signed_with_secret(data)):
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
        return self._principals.of(record)

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Introspection:
    """Client credentials to check opaque access tokens with introspection (RFC 7662).

    Better Auth's OAuth provider answers introspection at
    ``{issuer}/oauth2/introspect`` for a registered client (``client_secret_basic``).
    It says ``active: true`` only to the client the token was issued to, or to
    a client linked to the token's resources: opaque tokens name no resource, so
    use the credentials of the client that gets them.

    Args:
        client_id, client_secret: the client's credentials.
        url: the endpoint (default: the discovered ``introspection_endpoint``,
            else ``{issuer}/oauth2/introspect``).
        cache_ttl: seconds an answer is remembered at most (never past the
            token's ``exp``): this bounds how long a revoked token still passes.
        cache_size: answers (and refusals) remembered at most.
        refusal_ttl: seconds an inactive token's refusal is remembered.
        timeout: seconds an introspection call may take.
        redis: a :class:`~starlette_betterauth.RedisStore` whose Redis every
            process of the fleet shares: introspection answers are shared there
            (under the SHA-256 of the token, for ``cache_ttl`` at most and never
            past the token's ``exp``; ``active: false`` for ``refusal_ttl``), one
            introspection call across the fleet per new token. Its
            ``secondary_storage`` setting does not matter here.

    Example::

        AccessToken(
            resource="https://api.example.com",
            introspection=Introspection(client_id="...", client_secret="..."),
        )
    """

    client_id: str
    client_secret: str = field(repr=False)
    url: str | None = None
    cache_ttl: float = 60.0
    cache_size: int = 10_000
    refusal_ttl: float = 5.0
    timeout: float = 5.0
    redis: RedisStore | None = None

    def __post_init__(self) -> None:
        for name in ("client_id", "client_secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"Introspection needs a non-empty {name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessToken(Credential):
    """OAuth 2.1 access tokens of Better Auth's OAuth provider, for a resource server.

    JWT access tokens (RFC 9068; Better Auth issues them when the client asks
    for a ``resource``) are verified locally against the server's key set:
    header ``typ`` ``at+jwt`` (an ID token or a session JWT is refused, saying
    which it is), ``iss`` the provider's issuer, ``aud`` naming ``resource``,
    ``exp``, and a ``client_id``. ``scope`` fills ``user.scopes`` and
    ``request.auth.scopes`` (``scope:<name>``), ``user.client_id`` names the
    client and ``user.is_machine`` tells a ``client_credentials`` token from a
    user's. Opaque access tokens are checked by introspection when
    ``introspection`` is given. A DPoP-bound token (``cnf.jkt``) must come as
    ``Authorization: DPoP`` with a valid proof (RFC 9449).

    The API describes itself at ``/.well-known/oauth-protected-resource`` plus
    the resource's path (RFC 9728), and its 401 challenges name that URL
    (``resource_metadata``), as MCP clients expect.

    Args:
        resource: this API's resource identifier(s) (RFC 8707): what clients
            pass as ``resource`` and tokens carry in ``aud``.
        issuer: the provider's issuer (default: the middleware's ``base_url``
            plus Better Auth's basePath ``/api/auth``, or the issuer of
            ``discovery_url``).
        discovery_url: the provider's metadata (RFC 8414), e.g.
            ``{base_url}/api/auth/.well-known/oauth-authorization-server``:
            its ``jwks_uri`` and ``introspection_endpoint`` are used, read once
            on first need. Without it the middleware's key set is used.
        introspection: client credentials to check opaque access tokens.
        opaque_prefix: Better Auth's ``prefix.opaqueAccessToken``; needed when
            :class:`SessionToken` is accepted too (opaque tokens look alike).
        dpop: accept ``Authorization: DPoP`` with proofs (DPoP-bound tokens).
        dpop_max_age: seconds a proof is accepted after its ``iat``.
        dpop_algorithms: proof algorithms accepted (default all asymmetric ones).
        dpop_replay_cache_size: proof ids remembered against replays.
        public_origin: ``scheme://host[:port]`` clients reach this API at, when
            a proxy changes the scheme or host the app sees (DPoP's ``htu``).
        resource_metadata: serve the RFC 9728 document and name it in challenges.
        scopes_supported: scopes the metadata document lists.
        resource_name: a human-readable name the metadata document gives.

    Example::

        app.add_middleware(
            BetterAuthMiddleware,
            base_url="https://auth.example.com",
            accept=[BearerJWT(), AccessToken(resource="https://api.example.com")],
        )
    """

    resource: str | Sequence[str]
    issuer: str | None = None
    discovery_url: str | None = None
    introspection: Introspection | None = None
    opaque_prefix: str | None = None
    dpop: bool = True
    dpop_max_age: float = DEFAULT_DPOP_MAX_AGE
    dpop_algorithms: Sequence[str] | None = None
    dpop_replay_cache_size: int = 100_000
    public_origin: str | None = None
    resource_metadata: bool = True
    scopes_supported: Sequence[str] | None = None
    resource_name: str | None = None

    def bind(self, context: Context) -> Authenticator:
        """Bind to the middleware's key set, token cache and HTTP client."""
        return AccessTokenAuthenticator(self, context)


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
    shared = replace(context, sole_bearer=sole_bearer, kinds=tuple(kinds))
    return tuple(kind.bind(shared) for kind in kinds)

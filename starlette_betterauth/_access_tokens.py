"""OAuth 2.1 access tokens of Better Auth's OAuth provider: the machinery of
:class:`~starlette_betterauth.credentials.AccessToken`.

JWT access tokens follow RFC 9068: header ``typ`` ``at+jwt``, ``iss`` the
provider's issuer (Better Auth's baseURL plus its basePath, ``/api/auth``),
``aud`` naming this API's resource, ``scope`` space-separated, ``client_id`` and
``azp`` the client. They are signed with the jwt plugin's keys, so they are
verified locally against the key set the middleware already caches. Opaque
access tokens are checked with introspection (RFC 7662) when the API has client
credentials. A token bound to a DPoP key (``cnf.jkt``) is accepted only with
``Authorization: DPoP`` and a valid proof; the middleware checks that for every
kind, and this kind carries the :class:`~starlette_betterauth._dpop.DPoPVerifier`.

When a request's bearer value could be a session JWT or an access token (both
kinds accepted), the header ``typ`` decides: ``at+jwt`` is an access token,
anything else a session JWT (:func:`header_typ` reads it from a small memo, so
it costs a dictionary lookup).
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ._claims import short_repr
from ._compact import MAX_HEADER_LENGTH, decode_segment
from ._dpop import DPoPVerifier
from ._fleet import SharedAnswers
from ._headers import Presented
from ._http import parse_retry_after
from ._introspection import IntrospectionClient
from ._jwks import JWKSCache
from ._metadata import ResourceMetadata
from ._origins import TrustedOrigins
from ._remote import RemoteLookup, freeze_json
from ._settings import check_audiences, check_http_url, check_issuer
from ._token_cache import TokenCache
from ._user import UserBuilder
from ._verifier import TokenVerifier
from .errors import (
    ConfigurationError,
    InvalidAudienceError,
    InvalidClaimError,
    KeySetFetchError,
    MalformedTokenError,
    OpaqueTokenError,
    ServiceUnavailableError,
    TokenTypeError,
)

if TYPE_CHECKING:
    from ._settings import ResolvedSettings
    from ._user import RoleSource
    from .credentials import AccessToken, Context, Principal

__all__ = [
    "ACCESS_TOKEN_TYP",
    "DEFAULT_BASE_PATH",
    "AccessTokenAuthenticator",
    "Discovery",
    "bind_standalone",
    "header_typ",
    "id_token_error",
    "is_access_token",
    "issuer_of_discovery_url",
]

logger = logging.getLogger("starlette_betterauth")

#: RFC 9068's header ``typ`` of a JWT access token.
ACCESS_TOKEN_TYP = "at+jwt"
_ACCESS_TOKEN_TYPS = frozenset({"at+jwt", "application/at+jwt"})
#: Better Auth's default basePath: its OAuth issuer is ``baseURL + basePath``.
DEFAULT_BASE_PATH = "/api/auth"
_WELL_KNOWN = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
_MAX_DISCOVERY_BODY = 64 * 1024
_KEPT = 10 * 365 * 86400.0  # the metadata is kept for the life of the process

# -- routing by header typ ---------------------------------------------------------

# The typ of each encoded header seen: every token of one key and kind has the
# same header, so routing a token costs a slice and a lookup. Bounded; emptied when
# full (headers an attacker invents cost a decoding each, never memory).
_TYPS: dict[str, str | None] = {}
_MAX_TYPS = 256


def header_typ(token: str) -> str | None:
    """The lower-cased header ``typ`` of a compact JWT, unverified; None when absent or
    unreadable (the verifier then names what is wrong)."""
    end = token.find(".")
    segment = token[:end] if end > 0 else ""
    try:
        return _TYPS[segment]
    except KeyError:
        pass
    typ: str | None = None
    if 0 < len(segment) <= MAX_HEADER_LENGTH:
        try:
            header = json.loads(decode_segment(segment, "header"))
        except (MalformedTokenError, UnicodeDecodeError, ValueError, RecursionError):
            header = None
        value = header.get("typ") if isinstance(header, dict) else None
        typ = value.lower() if isinstance(value, str) else None
    if len(_TYPS) >= _MAX_TYPS:
        _TYPS.clear()
    _TYPS[segment] = typ
    return typ


def is_access_token(token: str) -> bool:
    """Whether a three-segment bearer value says it is an RFC 9068 access token (``at+jwt``)."""
    return header_typ(token) in _ACCESS_TOKEN_TYPS


def _unverified_claims(token: str) -> Mapping[str, Any]:
    """The payload of a compact JWT, unverified, for explaining a refusal only."""
    try:
        segment = token.split(".")[1]
        claims = json.loads(decode_segment(segment, "payload"))
    except (IndexError, MalformedTokenError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    except binascii.Error:  # pragma: no cover - decode_segment checks the alphabet
        return {}
    return claims if isinstance(claims, dict) else {}


_ID_TOKEN = (
    "this is an OpenID Connect ID token (no typ at+jwt, aud is the client): ID tokens tell "
    "the client who signed in and are never access tokens; send the access_token of the "
    "token response"
)


def _looks_like_id_token(claims: Mapping[str, Any]) -> bool:
    aud = claims.get("aud")
    client = claims.get("azp") or claims.get("client_id")
    return any(name in claims for name in ("nonce", "at_hash", "auth_time")) or (
        isinstance(aud, str) and aud == client
    )


def id_token_error(token: str) -> TokenTypeError | None:
    """A :class:`TokenTypeError` when a refused JWT without ``typ at+jwt`` is an OpenID
    Connect ID token (judged from its unverified claims), else None."""
    if header_typ(token) in (None, "jwt", "application/jwt") and _looks_like_id_token(
        _unverified_claims(token)
    ):
        return TokenTypeError(_ID_TOKEN)
    return None


def type_error(typ: str | None, claims: Mapping[str, Any], base_url: str | None) -> TokenTypeError:
    """Why a JWT that is not ``at+jwt`` is refused as an access token, as precisely as its
    (unverified) claims allow: an ID token, a session JWT, a session cookie cache."""
    if typ == "better-auth.session-cache+jwt":
        return TokenTypeError(
            "this is Better Auth's session_data cookie, not an OAuth access token "
            "(accept it with SessionCookie())"
        )
    if typ in (None, "jwt", "application/jwt"):
        if _looks_like_id_token(claims):
            return TokenTypeError(_ID_TOKEN)
        if base_url is not None and claims.get("iss") == base_url:
            return TokenTypeError(
                "this is a Better Auth session JWT (no typ at+jwt, iss is the base URL), not "
                "an OAuth access token: accept it with BearerJWT() next to AccessToken()"
            )
    return TokenTypeError(
        f"the token's typ is {short_repr(typ)}, not 'at+jwt': it is not an OAuth access "
        "token (RFC 9068)"
    )


def issuer_of_discovery_url(url: str) -> str:
    """The issuer an RFC 8414 metadata URL belongs to (section 3.1), in either of the two
    layouts Better Auth serves: ``{issuer}/.well-known/...`` and
    ``{origin}/.well-known/...{issuer path}``.

    Raises:
        ConfigurationError: the URL has no well-known metadata path.
    """
    check_http_url("discovery_url", url)
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    for suffix in _WELL_KNOWN:
        if parts.path.endswith(suffix):
            return origin + parts.path[: -len(suffix)]
        if parts.path.startswith(suffix + "/") or parts.path == suffix:
            return origin + parts.path[len(suffix) :]
    raise ConfigurationError(
        f"discovery_url must end with {_WELL_KNOWN[0]} or {_WELL_KNOWN[1]} (RFC 8414), got {url!r}"
    )


class _Metadata:
    """The one thing discovery looks up: the issuer's metadata document."""

    __slots__ = ()
    key = b"authorization-server-metadata"


class Discovery(RemoteLookup[_Metadata, Mapping[str, Any]]):
    """The authorization server's metadata (RFC 8414), fetched once and kept.

    ``jwks_uri`` and ``introspection_endpoint`` do not change while a server runs,
    so the document is fetched on first need (one fetch however many requests
    wait) and kept; after a failure, or a document that names another issuer
    (RFC 8414 section 3.3), no fetch is made for ``retry_interval`` seconds and
    requests meanwhile get a 503 with ``Retry-After``.
    """

    service = "discovery"
    event = "discovery"
    unavailable = KeySetFetchError

    def __init__(
        self,
        url: str,
        issuer: str,
        *,
        client: httpx.AsyncClient | None,
        timeout: float,
        retry_interval: float,
    ) -> None:
        super().__init__(
            url,
            client=client,
            cache_size=1,
            cache_ttl=_KEPT,
            refusal_ttl=0,
            timeout=timeout,
            max_body_size=_MAX_DISCOVERY_BODY,
            retry_interval=retry_interval,
            on_event=None,
        )
        self.issuer = issuer

    async def fetch(self) -> Mapping[str, Any]:
        """The document, fetched the first time.

        Raises:
            KeySetFetchError: no usable document can be had now (503).
        """
        return await self.lookup(_Metadata())

    def _request(self, credential: _Metadata) -> httpx.Request:
        return httpx.Request(
            "GET",
            self.url,
            headers={"accept": "application/json"},
            extensions={"timeout": self._timeout_extension},
        )

    def _http_error(self, response: httpx.Response) -> ServiceUnavailableError:
        # Any status: a wrong URL must not be fetched again on every request.
        message = f"discovery answered HTTP {response.status_code} at {self.url}"
        return self._back_off(
            message + self._status_hint(response.status_code),
            parse_retry_after(response.headers.get("retry-after")),
        )

    def _parse(self, body: bytes, credential: _Metadata) -> tuple[Mapping[str, Any], float]:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            raise self._back_off("the authorization server metadata is not a JSON object", None)
        issuer = document.get("issuer")
        if issuer != self.issuer:
            raise self._back_off(
                f"the authorization server metadata names issuer {short_repr(issuer)}, not "
                f"{self.issuer!r}, the issuer its URL belongs to",
                None,
            )
        for member in ("jwks_uri", "introspection_endpoint"):
            value = document.get(member)
            if value is None and member != "jwks_uri":
                continue
            try:
                check_http_url(member, value)
            except ConfigurationError as exc:
                raise self._back_off(
                    f"the authorization server metadata's {exc.message}", None
                ) from exc
        return freeze_json(document), time.time() + _KEPT


class _Resolved:
    """What verifies tokens once the issuer's endpoints are known."""

    __slots__ = ("cache", "introspection", "jwks", "verifier")

    def __init__(
        self,
        verifier: TokenVerifier,
        cache: TokenCache[Principal],
        jwks: JWKSCache | None,
        introspection: IntrospectionClient[Principal] | None,
    ) -> None:
        self.verifier = verifier
        self.cache = cache
        self.jwks = jwks  # a key-set cache of its own, closed with the kind
        self.introspection = introspection


class AccessTokenAuthenticator:
    """:class:`~starlette_betterauth.credentials.AccessToken` bound to one middleware."""

    kind = "access_token"
    origins: TrustedOrigins | None = None

    def __init__(self, config: AccessToken, context: Context) -> None:
        from .credentials import BearerJWT, SessionToken

        settings = context.settings
        #: The middleware's base URL, when it has one.
        self.base_url = settings.base_url if settings is not None else None
        self._config = config
        self._context = context
        self._users: UserBuilder = context.users
        #: The key-set cache this kind shares (the middleware's, or its own when standalone).
        self.shared_jwks: JWKSCache = context.verifier.jwks
        self.audiences = check_audiences(config.resource)
        resources = [config.resource] if isinstance(config.resource, str) else config.resource
        issuer = config.issuer
        if config.discovery_url is not None:
            discovered = issuer_of_discovery_url(config.discovery_url)
            if issuer is not None and issuer != discovered:
                raise ConfigurationError(
                    f"issuer={issuer!r} is not the issuer discovery_url belongs to ({discovered!r})"
                )
            issuer = discovered
        if issuer is None:
            if self.base_url is None:
                raise ConfigurationError(
                    "AccessToken needs issuer= (or discovery_url=, or the middleware's base_url=)"
                )
            issuer = self.base_url + DEFAULT_BASE_PATH
        self.issuer = check_issuer(issuer)
        if config.opaque_prefix is not None and not config.opaque_prefix:
            raise ConfigurationError("opaque_prefix must be a non-empty string (or None)")
        kinds = context.kinds
        # One accepted kind per shape of bearer value (credentials' module docstring).
        self._sole = context.sole_bearer
        self._route_by_typ = any(isinstance(kind, BearerJWT) for kind in kinds)
        self._opaque = config.introspection is not None
        if (
            self._opaque
            and config.opaque_prefix is None
            and any(isinstance(kind, SessionToken) for kind in kinds)
        ):
            raise ConfigurationError(
                "SessionToken and AccessToken(introspection=...) both read opaque bearer "
                "tokens, which look alike (32 letters): set Better Auth's "
                "prefix.opaqueAccessToken (e.g. 'at_') and pass it as opaque_prefix="
            )
        self.dpop: DPoPVerifier | None = None
        if config.dpop:
            verifier = context.verifier
            self.dpop = DPoPVerifier(
                algorithms=config.dpop_algorithms,
                max_age=config.dpop_max_age,
                leeway=verifier.rules.leeway,
                replay_cache_size=config.dpop_replay_cache_size,
                public_origin=config.public_origin,
            )
        elif config.public_origin is not None:
            raise ConfigurationError("public_origin only serves DPoP (dpop=True)")
        self.metadata: tuple[ResourceMetadata, ...] = ()
        if config.resource_metadata:
            documents = [
                ResourceMetadata.build(
                    resource,
                    authorization_server=self.issuer,
                    scopes_supported=config.scopes_supported,
                    dpop_algs=self.dpop.algs if self.dpop is not None else None,
                    resource_name=config.resource_name,
                )
                for resource in resources
            ]
            self.metadata = tuple(d for d in documents if d is not None)
        self._discovery: Discovery | None = None
        self._resolved: _Resolved | None = None
        if config.discovery_url is not None:
            options = context.verifier.jwks.options
            self._discovery = Discovery(
                config.discovery_url,
                self.issuer,
                client=context.http_client,
                timeout=options.timeout,
                retry_interval=options.retry_interval,
            )
        else:
            self._resolved = self._resolve(context.verifier.jwks.url, None)

    # -- resolving the issuer's endpoints ----------------------------------------------

    def _resolve(self, jwks_url: str, introspection_url: str | None) -> _Resolved:
        context = self._context
        shared = context.verifier.jwks
        jwks: JWKSCache | None = None
        cache = context.cache
        if jwks_url != shared.url:
            jwks = JWKSCache(
                jwks_url,
                client=context.http_client,
                algorithms=shared.algorithms,
                options=shared.options,
                on_event=context.on_event,
            )
            # The shared cache drops a token when its key leaves the middleware's key
            # set; these tokens are checked against another one.
            cache = TokenCache(
                max_entries=context.cache.max_entries,
                ttl=context.cache.ttl,
                leeway=context.cache.leeway,
                key_set=jwks,
            )
        rules = context.verifier.rules
        verifier = TokenVerifier(
            jwks or shared,
            issuer=self.issuer,
            audience=self.audiences,
            algorithms=sorted(context.verifier.algorithms),
            leeway=rules.leeway,
            require_exp=True,
            typ=ACCESS_TOKEN_TYP,
        )
        introspection: IntrospectionClient[Principal] | None = None
        settings = self._config.introspection
        if settings is not None:
            answers = None
            if settings.redis is not None:
                answers = SharedAnswers.for_lookup(
                    settings.redis,
                    cache_ttl=settings.cache_ttl,
                    refusal_ttl=settings.refusal_ttl,
                    timeout=settings.timeout,
                )
            introspection = IntrospectionClient(
                settings.url or introspection_url or self.issuer + "/oauth2/introspect",
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                issuer=self.issuer,
                audiences=self.audiences,
                build=self._build,
                leeway=rules.leeway,
                client=context.http_client,
                cache_size=settings.cache_size,
                cache_ttl=settings.cache_ttl,
                refusal_ttl=settings.refusal_ttl,
                timeout=settings.timeout,
                on_event=context.on_event,
                shared=answers,
            )
        return _Resolved(verifier, cache, jwks, introspection)

    async def _ready(self) -> _Resolved:
        resolved = self._resolved
        if resolved is not None:
            return resolved
        assert self._discovery is not None
        document = await self._discovery.fetch()
        if self._resolved is None:  # another task may have resolved meanwhile
            endpoint = document.get("introspection_endpoint")
            self._resolved = self._resolve(
                document["jwks_uri"], endpoint if isinstance(endpoint, str) else None
            )
        return self._resolved

    @property
    def introspection(self) -> IntrospectionClient[Principal] | None:
        """The introspection client, once the issuer's endpoints are known."""
        return self._resolved.introspection if self._resolved is not None else None

    @property
    def verifier(self) -> TokenVerifier | None:
        """The access-token verifier, once the issuer's endpoints are known."""
        return self._resolved.verifier if self._resolved is not None else None

    # -- the Authenticator protocol ------------------------------------------------

    def find(self, presented: Presented) -> str | None:
        token = presented.bearer
        if token is None:
            # Authorization: DPoP: this is the only kind that takes it.
            return presented.dpop if self.dpop is not None else None
        dots = token.count(".")
        if dots == 2:
            return token if not self._route_by_typ or is_access_token(token) else None
        if self._sole:
            return token
        if self._opaque and dots == 0:
            prefix = self._config.opaque_prefix
            return token if prefix is None or token.startswith(prefix) else None
        return None

    def cached(self, credential: str) -> Principal | None:
        resolved = self._resolved
        return resolved.cache.get(credential) if resolved is not None else None

    async def authenticate(self, credential: str, presented: Presented) -> Principal:
        resolved = await self._ready()
        dots = credential.count(".")
        if dots == 2:
            return await self._verify(resolved, credential)
        introspection = resolved.introspection
        prefix = self._config.opaque_prefix
        if introspection is not None and dots == 0:
            if prefix is not None and not credential.startswith(prefix):
                raise OpaqueTokenError(
                    f"this opaque bearer value does not start with {prefix!r} "
                    "(opaque_prefix): it is not one of the provider's access tokens"
                )
            return await introspection.introspect(credential)
        raise OpaqueTokenError(
            "this bearer value is not a JWT access token: an opaque access token (Better Auth "
            "issues one when the client asks for no resource), a refresh token or a session "
            "token. Ask for the token with resource= naming this API to get a JWT, or check "
            "opaque tokens with AccessToken(introspection=Introspection(...))"
            if introspection is None
            else "this bearer value is neither a JWT access token nor an opaque one"
        )

    async def _verify(self, resolved: _Resolved, token: str) -> Principal:
        typ = header_typ(token)
        if typ not in _ACCESS_TOKEN_TYPS:
            raise type_error(typ, _unverified_claims(token), self.base_url)
        try:
            verified = await resolved.verifier.verify_token(token)
        except InvalidAudienceError as exc:
            raise InvalidAudienceError(
                f"{exc.message}: the token was issued for another resource; ask Better Auth "
                f"for one with resource={sorted(self.audiences)[0]!r}"
            ) from exc
        claims = verified.claims
        if not isinstance(claims.get("client_id") or claims.get("azp"), str):
            raise InvalidClaimError("the access token names no client (client_id, RFC 9068)")
        principal = self._build(claims, verified.exp)
        resolved.cache.put(token, principal, verified.key, verified.exp)
        return principal

    def _build(self, claims: Mapping[str, Any], expires_at: float | None) -> Principal:
        return self._users.build(claims, kind=self.kind, expires_at=expires_at)

    async def aclose(self) -> None:
        if self._discovery is not None:
            await self._discovery.aclose()
        resolved = self._resolved
        if resolved is None:
            return
        if resolved.introspection is not None:
            await resolved.introspection.aclose()
        if resolved.jwks is not None:
            await resolved.jwks.aclose()


def bind_standalone(
    kind: AccessToken,
    settings: ResolvedSettings,
    *,
    roles: RoleSource = "role",
    token_cache_size: int = 10_000,
    token_cache_ttl: float = 300.0,
    http_client: httpx.AsyncClient | None = None,
) -> AccessTokenAuthenticator:
    """Bind ``kind`` without a middleware (the MCP adapter, the command line): its own key-set
    cache, token cache and users. Close it with ``aclose()`` and its verifier's key set."""
    from .credentials import Context

    verifier = TokenVerifier.from_settings(settings, http_client=http_client)
    context = Context(
        settings=settings,
        verifier=verifier,
        users=UserBuilder(roles),
        cache=TokenCache(
            max_entries=token_cache_size,
            ttl=token_cache_ttl,
            leeway=verifier.rules.leeway,
            key_set=verifier.jwks,
        ),
        http_client=http_client,
        on_event=None,
        sole_bearer=True,
        kinds=(kind,),
    )
    return AccessTokenAuthenticator(kind, context)

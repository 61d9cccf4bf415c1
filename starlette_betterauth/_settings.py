"""The one path from settings to a verifier: declared once, validated once.

:class:`VerifierSettings` declares every verification setting the middleware,
:meth:`TokenVerifier.for_server` and the command line accept; :func:`resolve_settings`
checks them (a :class:`ConfigurationError` naming the setting for every bad value)
and resolves them the way Better Auth lays a server out. :class:`KeySetOptions`
tunes the key-set cache.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, fields
from typing import Literal, TypedDict
from urllib.parse import urlsplit

import httpx

from ._keys import SUPPORTED_ALGORITHMS
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_JWKS_PATH",
    "DEFAULT_LEEWAY",
    "ENV_BASE_URL",
    "MAX_LEEWAY",
    "KeySetOptions",
    "RedisStore",
    "ResolvedSettings",
    "VerifierSettings",
    "check_algorithms",
    "check_audiences",
    "check_http_url",
    "check_issuer",
    "check_leeway",
    "resolve_settings",
]

ENV_BASE_URL = "BETTER_AUTH_URL"
#: Better Auth's default basePath plus the jwt plugin's default jwksPath.
DEFAULT_JWKS_PATH = "/api/auth/jwks"
#: Seconds of clock skew tolerated on exp, nbf and iat.
DEFAULT_LEEWAY = 10.0
#: The most clock skew that may be tolerated: more would make expiry meaningless.
MAX_LEEWAY = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySetOptions:
    """How the key-set cache fetches and keeps a server's keys.

    Example::

        app.add_middleware(
            BetterAuthMiddleware,
            base_url="https://auth.example.com",
            key_set=KeySetOptions(ttl=600, refresh_cooldown=2),
        )

    Attributes:
        ttl: seconds a fetched key set is fresh when the server sends no
            ``Cache-Control: max-age`` (Better Auth sends none).
        min_ttl, max_ttl: bounds applied to the server's ``max-age``.
        refresh_cooldown: least seconds between two refetches caused by an
            unknown ``kid``.
        max_stale: seconds the last good keys keep serving after a refresh fails.
        retry_interval: seconds before a failed fetch is retried.
        timeout: seconds a whole fetch, body included, may take.
        max_body_size: bytes of key set accepted.
        libsodium: check Ed25519 (EdDSA) signatures with libsodium, through
            PyNaCl, when it is installed (``pip install starlette-betterauth[nacl]``):
            about twice as fast as ``cryptography``, with the same verdicts.
            False keeps ``cryptography``'s check.

    Raises:
        ConfigurationError: a value out of range, naming the setting.
    """

    ttl: float = 300.0
    min_ttl: float = 30.0
    max_ttl: float = 86400.0
    refresh_cooldown: float = 1.0
    max_stale: float = 3600.0
    retry_interval: float = 5.0
    timeout: float = 5.0
    max_body_size: int = 512 * 1024
    libsodium: bool = True

    def __post_init__(self) -> None:
        for name in ("ttl", "min_ttl", "max_ttl", "max_stale", "timeout"):
            _check_seconds(name, getattr(self, name), positive=True)
        for name in ("refresh_cooldown", "retry_interval"):
            _check_seconds(name, getattr(self, name), positive=False)
        size = self.max_body_size
        if type(size) is not int or size <= 0:
            raise ConfigurationError("max_body_size must be a positive number of bytes")
        if type(self.libsodium) is not bool:
            raise ConfigurationError("libsodium must be True or False")


#: Better Auth's ``@better-auth/redis-storage`` default ``keyPrefix``.
DEFAULT_REDIS_KEY_PREFIX = "better-auth:"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisStore:
    """The Redis a fleet of API processes shares (needs ``starlette-betterauth[redis]``).

    Give it to the credential kinds: ``SessionCookie(redis=store)``,
    ``SessionToken(redis=store)``, ``BearerJWT(redis=store)``, and to
    ``Introspection(redis=store)``, which shares introspection answers there
    whatever ``secondary_storage`` says. Each process keeps one connection pool
    for equal settings, whichever kinds use it.

    With ``secondary_storage=True`` (the default) this is the Redis Better Auth
    writes as its ``secondaryStorage``: session cookies and tokens are checked
    with one Redis round trip instead of a get-session call, a deleted session
    (sign-out, revocation, ban) is refused at once, and JWTs issued before
    their user's ``revoked-sessions-before-<userId>`` mark are refused. With
    ``secondary_storage=False`` it is a cache of get-session answers shared by
    every process, with at most one call in flight across the fleet per new
    credential.

    Example::

        store = RedisStore("redis://redis.internal:6379/0")
        app.add_middleware(
            BetterAuthMiddleware,
            base_url="https://auth.example.com",
            accept=[SessionCookie(redis=store), BearerJWT(redis=store)],
        )

    Attributes:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL (database, password included).
        secondary_storage: Better Auth writes its sessions here (``secondaryStorage``).
        key_prefix: the prefix Better Auth's storage puts before its keys
            (``@better-auth/redis-storage``'s default ``"better-auth:"``; ``""``
            for a storage without one).
        cache_prefix: the prefix of this package's own keys (shared cache, locks).
        timeout: seconds one Redis round trip may take, connecting included (and
            seconds a request waits for a free connection).
        retry_interval: seconds Redis is not asked again after it failed
            (unreachable, slow or answering garbage).
        on_error: what a check does while Redis fails: ``"fallback"`` asks
            get-session instead (and accepts a JWT on its signature, refusing the
            revocations this process already knows); ``"refuse"`` answers 503
            with ``Retry-After``.
        max_connections: connections per process at most; more requests wait
            for one, within ``timeout``, then do without Redis (as in ``on_error``).

    Raises:
        ConfigurationError: a value out of range, naming the setting. (The
            kinds given the store raise one when the ``redis`` package is missing.)
    """

    url: str
    _: KW_ONLY
    secondary_storage: bool = True
    key_prefix: str = DEFAULT_REDIS_KEY_PREFIX
    cache_prefix: str = "starlette-betterauth:"
    timeout: float = 0.5
    retry_interval: float = 1.0
    on_error: Literal["fallback", "refuse"] = "fallback"
    max_connections: int = 32

    def __post_init__(self) -> None:
        url = self.url
        if not isinstance(url, str) or urlsplit(url).scheme not in _REDIS_SCHEMES:
            raise ConfigurationError(
                f"url must be a redis://, rediss:// or unix:// URL, got {url!r}"
            )
        if not isinstance(self.secondary_storage, bool):
            raise ConfigurationError("secondary_storage must be True or False")
        for name in ("key_prefix", "cache_prefix"):
            if not isinstance(getattr(self, name), str):
                raise ConfigurationError(f"{name} must be a string")
        if not self.cache_prefix:
            raise ConfigurationError("cache_prefix must not be empty")
        _check_seconds("timeout", self.timeout, positive=True)
        _check_seconds("retry_interval", self.retry_interval, positive=False)
        if self.on_error not in ("fallback", "refuse"):
            raise ConfigurationError(
                f'on_error must be "fallback" or "refuse", got {self.on_error!r}'
            )
        count = self.max_connections
        if type(count) is not int or count <= 0:
            raise ConfigurationError("max_connections must be a positive integer")

    def __repr__(self) -> str:
        # The URL may carry a password: show its host only.
        host = urlsplit(self.url).hostname or urlsplit(self.url).path
        return f"RedisStore({host!r}, secondary_storage={self.secondary_storage})"


class VerifierSettings(TypedDict, total=False):
    """The verification settings, as keyword arguments of the middleware and of
    :meth:`TokenVerifier.for_server` (the command line maps its options onto them).

    Keys:
        base_url: Better Auth's ``baseURL``; keys come from
            ``{base_url}/api/auth/jwks`` and ``iss``/``aud`` must equal it.
            Defaults to the ``BETTER_AUTH_URL`` environment variable.
        jwks_url: the key set's URL, for a custom basePath or jwksPath.
        issuer: the exact ``iss`` required (defaults to ``base_url``).
        audience: the accepted audience or audiences (defaults to ``base_url``).
        verify_issuer, verify_audience: opt-outs of those checks (not advised).
        algorithms: accepted algorithms (default all of EdDSA, ES256, ES512,
            RS256, PS256).
        leeway: seconds of clock skew tolerated (0 to 300; default 10).
        require_exp: refuse tokens without ``exp`` (default True).
        key_set: :class:`KeySetOptions` for the key-set cache.
    """

    base_url: str | None
    jwks_url: str | None
    issuer: str | None
    audience: str | Sequence[str] | None
    verify_issuer: bool
    verify_audience: bool
    algorithms: Sequence[str] | None
    leeway: float
    require_exp: bool
    key_set: KeySetOptions


_SETTING_NAMES = frozenset(VerifierSettings.__annotations__)
_RENAMED = {
    "jwks_options": "key_set=KeySetOptions(...)",
    **{f.name: f"key_set=KeySetOptions({f.name}=...)" for f in fields(KeySetOptions)},
}


@dataclass(frozen=True, slots=True)
class ResolvedSettings:
    """Verification settings after defaults and checks: what a verifier is built from."""

    base_url: str | None
    jwks_url: str
    issuer: str | None
    audiences: frozenset[str] | None
    algorithms: frozenset[str]
    leeway: float
    require_exp: bool
    key_set: KeySetOptions


def resolve_settings(settings: Mapping[str, object]) -> ResolvedSettings:
    """Check ``settings`` and resolve them the way Better Auth defaults a server.

    ``jwks_url`` defaults to ``{base_url}/api/auth/jwks``; ``issuer`` and
    ``audience`` default to ``base_url``. With neither ``base_url`` nor
    ``jwks_url``, ``BETTER_AUTH_URL`` from the environment is the base URL.

    Raises:
        ConfigurationError: an unknown setting, or a missing or invalid value;
            the message names the setting.
    """
    unknown = sorted(settings.keys() - _SETTING_NAMES)
    if unknown:
        raise ConfigurationError(_unknown_message(unknown[0]))
    base_url = _optional_str(settings, "base_url")
    jwks_url = _optional_str(settings, "jwks_url")
    verify_issuer = _flag(settings, "verify_issuer")
    verify_audience = _flag(settings, "verify_audience")
    require_exp = _flag(settings, "require_exp")
    if base_url is None and jwks_url is None:
        base_url = os.environ.get(ENV_BASE_URL) or None
        if base_url is None:
            raise ConfigurationError(
                "no Better Auth server configured: pass base_url= (Better Auth's baseURL), "
                f"or jwks_url= with issuer= and audience=, or set {ENV_BASE_URL}"
            )
    if base_url is not None:
        base_url = check_http_url("base_url", base_url).rstrip("/")
    if jwks_url is None:
        jwks_url = f"{base_url}{DEFAULT_JWKS_PATH}"
    check_http_url("jwks_url", jwks_url)
    issuer: str | None = None
    if verify_issuer:
        issuer = _optional_str(settings, "issuer")
        if issuer is None:
            issuer = base_url
        if issuer is None:
            raise ConfigurationError(
                "issuer= is required when base_url= is not given (or pass verify_issuer=False)"
            )
        check_issuer(issuer)
    audiences: frozenset[str] | None = None
    if verify_audience:
        audience = settings.get("audience")
        if audience is None:
            if base_url is None:
                raise ConfigurationError(
                    "audience= is required when base_url= is not given "
                    "(or pass verify_audience=False)"
                )
            audience = base_url
        audiences = check_audiences(audience)
    algorithms = settings.get("algorithms")
    key_set = settings.get("key_set", KeySetOptions())
    if not isinstance(key_set, KeySetOptions):
        raise ConfigurationError(
            f"key_set must be a KeySetOptions(...), got {type(key_set).__name__}"
        )
    return ResolvedSettings(
        base_url=base_url,
        jwks_url=jwks_url,
        issuer=issuer,
        audiences=audiences,
        algorithms=check_algorithms(algorithms) if algorithms is not None else SUPPORTED_ALGORITHMS,
        leeway=check_leeway(settings.get("leeway", DEFAULT_LEEWAY)),
        require_exp=require_exp,
        key_set=key_set,
    )


def check_http_url(name: str, url: object) -> str:
    """Return ``url`` if it is a usable http(s) URL, else raise ConfigurationError."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{name} must be a URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        # Out-of-range ports and malformed hosts would otherwise fail at fetch time
        # with exceptions outside the package's tree.
        parts.port  # noqa: B018
        httpx.URL(url).host  # noqa: B018
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigurationError(f"{name} is not a valid URL ({exc}): {url!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{name} must be an http(s) URL, got {url!r}")
    return url


def check_issuer(issuer: object) -> str:
    """Return ``issuer`` if it is a non-empty string, else raise ConfigurationError."""
    if not isinstance(issuer, str) or not issuer:
        raise ConfigurationError("issuer must be a non-empty string (or None to skip the check)")
    return issuer


def check_audiences(audience: object) -> frozenset[str]:
    """``audience`` (a string or several) as a set, else raise ConfigurationError."""
    values = [audience] if isinstance(audience, str) else audience
    if not isinstance(values, Iterable):
        values = ()
    audiences = frozenset(values)
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise ConfigurationError(
            "audience must be a non-empty string or list of them (or None to skip the check)"
        )
    return audiences


def check_algorithms(algorithms: object) -> frozenset[str]:
    """``algorithms`` as a set, if a non-empty subset of the supported ones."""
    names: list[object] = []
    if isinstance(algorithms, Iterable) and not isinstance(algorithms, str):
        names = list(algorithms)
    if not names or not all(isinstance(n, str) and n in SUPPORTED_ALGORITHMS for n in names):
        raise ConfigurationError(
            f"algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}, "
            f"got {algorithms!r}"
        )
    return frozenset(n for n in names if isinstance(n, str))


def check_leeway(leeway: object) -> float:
    """``leeway`` as seconds, if a number from 0 to :data:`MAX_LEEWAY`."""
    if isinstance(leeway, bool) or not isinstance(leeway, int | float) or not leeway >= 0:
        raise ConfigurationError("leeway must be a number of seconds >= 0")
    if not leeway <= MAX_LEEWAY:
        raise ConfigurationError(
            f"leeway must be at most {MAX_LEEWAY:g} seconds (more would make expiry "
            f"meaningless), got {leeway!r}"
        )
    return float(leeway)


def _check_seconds(name: str, value: object, *, positive: bool) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (value > 0 if positive else value >= 0)
    ):
        rule = "a positive number of seconds" if positive else "a finite number of seconds >= 0"
        raise ConfigurationError(f"{name} must be {rule}")


def _optional_str(settings: Mapping[str, object], name: str) -> str | None:
    value = settings.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _flag(settings: Mapping[str, object], name: str) -> bool:
    value = settings.get(name, True)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def _unknown_message(name: str) -> str:
    if name in _RENAMED:
        return f"{name} is not a setting: pass {_RENAMED[name]}"
    close = difflib.get_close_matches(name, sorted(_SETTING_NAMES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown setting {name!r}{hint}"

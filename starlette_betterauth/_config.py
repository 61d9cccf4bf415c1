"""Where the verifier's settings come from: arguments, then ``BETTER_AUTH_URL``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_JWKS_PATH",
    "ENV_BASE_URL",
    "ServerSettings",
    "check_http_url",
    "resolve_server",
]

ENV_BASE_URL = "BETTER_AUTH_URL"
#: Better Auth's default basePath plus the jwt plugin's default jwksPath.
DEFAULT_JWKS_PATH = "/api/auth/jwks"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The resolved location of a Better Auth server's keys and its token identity."""

    jwks_url: str
    issuer: str | None
    audiences: frozenset[str] | None


def check_http_url(name: str, url: str) -> str:
    """Return ``url`` if it is a usable http(s) URL, else raise ConfigurationError."""
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


def resolve_server(
    *,
    base_url: str | None,
    jwks_url: str | None,
    issuer: str | None,
    audience: str | Sequence[str] | None,
    verify_issuer: bool = True,
    verify_audience: bool = True,
) -> ServerSettings:
    """Resolve the key-set URL, issuer and audiences the way Better Auth defaults them.

    ``jwks_url`` defaults to ``{base_url}/api/auth/jwks``; ``issuer`` and
    ``audience`` default to ``base_url``. With neither ``base_url`` nor
    ``jwks_url``, ``BETTER_AUTH_URL`` from the environment is the base URL.
    """
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
    resolved_issuer: str | None = None
    if verify_issuer:
        resolved_issuer = issuer if issuer is not None else base_url
        if not resolved_issuer:
            raise ConfigurationError(
                "issuer= is required when base_url= is not given (or pass verify_issuer=False)"
            )
    audiences: frozenset[str] | None = None
    if verify_audience:
        if audience is None:
            audience = base_url
        if isinstance(audience, str):
            audience = [audience]
        if not audience or not all(isinstance(a, str) and a for a in audience):
            raise ConfigurationError(
                "audience= is required when base_url= is not given (or pass verify_audience=False)"
            )
        audiences = frozenset(audience)
    return ServerSettings(jwks_url=jwks_url, issuer=resolved_issuer, audiences=audiences)
